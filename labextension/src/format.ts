// Small pure formatters for the panel and the status bar.
import { IRunner, ISnapshot } from './api';

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) {
    return '–';
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value >= 10 || unit === 0 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
}

export function age(seconds: number): string {
  if (!seconds || seconds < 0) {
    return '–';
  }
  if (seconds < 60) {
    return `${Math.floor(seconds)}s`;
  }
  if (seconds < 3600) {
    return `${Math.floor(seconds / 60)}m${Math.floor(seconds % 60)}s`;
  }
  return `${Math.floor(seconds / 3600)}h${Math.floor((seconds % 3600) / 60)}m`;
}

export function resources(r: IRunner): string {
  const parts: string[] = [];
  if (r.resources.cpu) {
    parts.push(`${r.resources.cpu} CPU`);
  }
  if (r.resources.memory) {
    parts.push(r.resources.memory);
  }
  const gpus = r.gpus.length || Number(r.resources.gpu || 0);
  if (gpus) {
    parts.push(`${gpus} GPU${gpus > 1 ? 's' : ''}${r.resources.gpu_type ? ` (${r.resources.gpu_type})` : ''}`);
  }
  return parts.join(', ') || 'default';
}

export function where(r: IRunner): string {
  return r.backend === 'local' ? `pid ${r.pid}` : `${r.namespace}/${r.pod}`;
}

/** Runners grouped by kernel (notebook), then pool, in a stable order. */
export function groups(snapshot: ISnapshot): Array<[string, Array<[string, IRunner[]]>]> {
  const byKernel = new Map<string, Map<string, IRunner[]>>();
  for (const r of snapshot.runners) {
    const kernel = r.notebook
      ? r.notebook
      : r.kernel_live
        ? `kernel ${r.kernel_id.slice(0, 8)}`
        : r.kernel_id
          ? `kernel ${r.kernel_id.slice(0, 8)} (not running here)`
          : 'no kernel';
    const pools = byKernel.get(kernel) ?? new Map<string, IRunner[]>();
    byKernel.set(kernel, pools);
    const list = pools.get(r.pool) ?? [];
    pools.set(r.pool, list);
    list.push(r);
  }
  return [...byKernel.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, pools]) => [k, [...pools.entries()].sort(([a], [b]) => a.localeCompare(b))]);
}

export function summary(snapshot: ISnapshot | null): string {
  if (!snapshot) {
    return 'FLAME: …';
  }
  const { runners, gpus } = snapshot.summary;
  const text = `FLAME: ${runners} runner${runners === 1 ? '' : 's'}`;
  return gpus ? `${text} · ${gpus} GPU${gpus === 1 ? '' : 's'}` : text;
}
