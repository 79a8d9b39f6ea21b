// jupyter-flame for JupyterLab 4 and Notebook 7: a "FLAME" sidebar panel listing every runner
// of this server (and its Kubernetes namespace), and a status-bar item with live runners and
// GPUs. Data comes from the jupyter_flame server extension (/flame/api).
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import flameSvg from '../style/icons/flame.svg';
import { RunnersModel } from './api';
import { summary } from './format';
import { RunnersPanel } from './panel';

export const flameIcon = new LabIcon({ name: 'jupyter-flame:flame', svgstr: flameSvg });

const OPEN = 'jupyter-flame:open-runners';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-flame:plugin',
  description: 'The FLAME runners panel and status-bar item.',
  autoStart: true,
  optional: [IStatusBar, ICommandPalette, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null
  ) => {
    const model = new RunnersModel();
    const panel = new RunnersPanel(model);
    panel.title.icon = flameIcon;
    app.shell.add(panel, 'left', { rank: 600 });

    app.commands.addCommand(OPEN, {
      label: 'Show FLAME runners',
      icon: flameIcon,
      execute: () => app.shell.activateById(panel.id)
    });
    palette?.addItem({ command: OPEN, category: 'FLAME' });

    if (statusBar) {
      const item = new Widget();
      item.addClass('jp-flame-status');
      item.node.title = 'FLAME runners: click to open the panel';
      const update = () => {
        item.node.textContent = summary(model.snapshot);
        item.node.classList.toggle('jp-flame-status-error', !!model.error);
      };
      model.changed.connect(update);
      update();
      item.node.onclick = () => void app.commands.execute(OPEN);
      statusBar.registerStatusItem('jupyter-flame:status', {
        item,
        align: 'left',
        rank: 50
      });
    }
    model.start();
  }
};

export default plugin;
