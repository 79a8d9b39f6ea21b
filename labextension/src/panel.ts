// The FLAME sidebar panel: every runner, grouped by kernel and pool, with delete, logs and
// orphan cleanup. Plain DOM rendered from the model's snapshot on every change.
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import {
  IRunner,
  RunnersModel,
  cleanup,
  deleteRunner,
  orphans,
  runnerLogs
} from './api';
import { age, bytes, groups, resources, where } from './format';

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls = '',
  text = ''
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (cls) {
    node.className = cls;
  }
  if (text) {
    node.textContent = text;
  }
  return node;
}

export class RunnersPanel extends Widget {
  private _logs = new Map<string, string[] | string>(); // runner id -> lines, or an error
  private _notice = '';
  private _busy = new Set<string>();

  constructor(private readonly model: RunnersModel) {
    super();
    this.id = 'jupyter-flame-panel';
    this.addClass('jp-flame-panel');
    this.title.caption = 'FLAME runners';
    model.changed.connect(() => this.render(), this);
    window.setInterval(() => this.isVisible && this.render(), 1000); // ages tick
    this.render();
  }

  private async _delete(r: IRunner): Promise<void> {
    this._busy.add(r.id);
    this.render();
    try {
      const done = await deleteRunner(r.id);
      this._notice = `${r.runner_id} (${where(r)}): ${done.action}`;
    } catch (error) {
      this._notice = `Could not delete ${r.runner_id}: ${(error as Error).message}`;
    } finally {
      this._busy.delete(r.id);
      await this.model.refresh();
    }
  }

  private async _toggleLogs(r: IRunner): Promise<void> {
    if (this._logs.has(r.id)) {
      this._logs.delete(r.id);
      this.render();
      return;
    }
    try {
      this._logs.set(r.id, (await runnerLogs(r.id, 50)).lines);
    } catch (error) {
      this._logs.set(r.id, (error as Error).message);
    }
    this.render();
  }

  private async _cleanup(): Promise<void> {
    let found: IRunner[];
    try {
      found = (await orphans()).orphans;
    } catch (error) {
      this._notice = `Could not list orphans: ${(error as Error).message}`;
      this.render();
      return;
    }
    if (!found.length) {
      this._notice = 'No orphaned runners.';
      this.render();
      return;
    }
    const body = el('div', 'jp-flame-confirm');
    body.appendChild(el('p', '', `These ${found.length} runners will be deleted:`));
    const list = el('ul');
    for (const r of found) {
      list.appendChild(el('li', '', `${r.runner_id} of pool ${r.pool}, ${where(r)}: ${r.orphan}`));
    }
    body.appendChild(list);
    const result = await showDialog({
      title: 'Clean up orphaned runners',
      body: new Widget({ node: body }),
      buttons: [
        Dialog.cancelButton(),
        Dialog.warnButton({ label: `Delete ${found.length}` })
      ]
    });
    if (!result.button.accept) {
      return;
    }
    try {
      const { deleted } = await cleanup(found.map(r => r.id));
      this._notice = `Deleted ${deleted.length} orphaned runner${deleted.length === 1 ? '' : 's'}.`;
    } catch (error) {
      this._notice = `Cleanup failed: ${(error as Error).message}`;
    }
    await this.model.refresh();
  }

  private _row(r: IRunner, now: number): HTMLElement {
    const row = el('div', 'jp-flame-runner');
    row.dataset.runnerId = r.id;
    const head = el('div', 'jp-flame-runner-head');
    const phase = r.deleting ? 'Terminating' : r.phase;
    head.appendChild(el('span', `jp-flame-badge jp-flame-phase-${phase.toLowerCase()}`, phase));
    if (r.activity) {
      head.appendChild(el('span', `jp-flame-badge jp-flame-activity-${r.activity}`, r.activity));
    }
    if (r.orphan) {
      head.appendChild(el('span', 'jp-flame-badge jp-flame-orphan', `orphan: ${r.orphan}`));
    }
    head.appendChild(el('span', 'jp-flame-runner-name', r.runner_id));
    const actions = el('span', 'jp-flame-actions');
    const logs = el('button', 'jp-flame-button jp-flame-logs', 'Logs');
    logs.title = 'Show the last lines of the runner log';
    logs.onclick = () => void this._toggleLogs(r);
    const del = el('button', 'jp-flame-button jp-flame-delete', 'Delete');
    del.title = `Delete runner ${r.runner_id} (${where(r)})`;
    del.disabled = this._busy.has(r.id) || r.deleting;
    del.onclick = () => void this._delete(r);
    actions.append(logs, del);
    head.appendChild(actions);
    row.appendChild(head);
    const started = r.started ? Math.max(0, now - r.started) : r.age;
    const facts: Array<[string, string]> = [
      ['where', where(r)],
      ['node', r.node || '–'],
      ['age', age(started)],
      ['resources', resources(r)],
      ['cpu', r.cpu_percent === null || r.cpu_percent === undefined ? '–' : `${r.cpu_percent}%`],
      ['memory', bytes(r.rss)]
    ];
    if (r.reason) {
      facts.push(['reason', r.reason]);
    }
    const dl = el('div', 'jp-flame-facts');
    for (const [k, v] of facts) {
      const fact = el('span', `jp-flame-fact jp-flame-fact-${k}`);
      fact.append(el('span', 'jp-flame-fact-key', k), el('span', 'jp-flame-fact-value', v));
      dl.appendChild(fact);
    }
    row.appendChild(dl);
    const shown = this._logs.get(r.id);
    if (shown !== undefined) {
      const pre = el('pre', 'jp-flame-log');
      pre.textContent =
        typeof shown === 'string' ? shown : shown.join('\n') || '(the log is empty)';
      row.appendChild(pre);
    }
    return row;
  }

  render(): void {
    const snap = this.model.snapshot;
    const node = this.node;
    node.textContent = '';
    const header = el('div', 'jp-flame-header');
    header.appendChild(el('h2', 'jp-flame-title', 'FLAME runners'));
    const clean = el('button', 'jp-flame-button jp-flame-cleanup', 'Clean up orphans');
    clean.title = 'Delete runners whose kernel or notebook is gone (asks first)';
    clean.onclick = () => void this._cleanup();
    header.appendChild(clean);
    node.appendChild(header);
    if (snap) {
      const s = snap.summary;
      const where = snap.kubernetes ? `local + namespace ${snap.kubernetes.namespace}` : 'local';
      node.appendChild(
        el('div', 'jp-flame-summary',
          `${s.runners} live · ${s.gpus} GPUs · ${s.orphans} orphans · ${where}`)
      );
    }
    if (this.model.error) {
      node.appendChild(el('div', 'jp-flame-error', this.model.error));
    }
    for (const p of snap?.problems ?? []) {
      node.appendChild(el('div', 'jp-flame-error', `${p.source} (${p.status}): ${p.message}`));
    }
    if (this._notice) {
      node.appendChild(el('div', 'jp-flame-notice', this._notice));
    }
    if (!snap) {
      node.appendChild(el('div', 'jp-flame-empty', 'Loading…'));
      return;
    }
    if (!snap.runners.length) {
      node.appendChild(
        el('div', 'jp-flame-empty', 'No runners. Run a cell with %%flame and it shows here.')
      );
      return;
    }
    const now = Date.now() / 1000;
    for (const [kernel, pools] of groups(snap)) {
      const group = el('section', 'jp-flame-kernel');
      group.appendChild(el('h3', 'jp-flame-kernel-name', kernel));
      for (const [pool, runners] of pools) {
        const p = el('div', 'jp-flame-pool');
        p.appendChild(el('h4', 'jp-flame-pool-name', `pool ${pool} · ${runners.length}`));
        for (const r of runners) {
          p.appendChild(this._row(r, now));
        }
        group.appendChild(p);
      }
      node.appendChild(group);
    }
  }
}
