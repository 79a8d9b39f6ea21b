// The server extension's REST routes and live stream (jupyter_flame/server/handlers.py).
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

export interface IRunner {
  id: string;
  backend: 'local' | 'kubernetes';
  runner_id: string;
  pool: string;
  kernel_id: string;
  notebook: string;
  kernel_live: boolean;
  phase: string;
  reason: string;
  activity: string;
  node: string;
  started: number;
  age: number;
  resources: Record<string, string>;
  gpus: string[];
  cpu_percent: number | null;
  rss: number | null;
  pid: number;
  pod: string;
  namespace: string;
  parent: string;
  deleting: boolean;
  orphan: string;
  action?: string;
}

export interface IProblem {
  source: string;
  status: number;
  message: string;
}

export interface ISnapshot {
  runners: IRunner[];
  problems: IProblem[];
  time: number;
  kubernetes: { namespace: string; parent: string; host: string } | null;
  summary: { runners: number; gpus: number; orphans: number };
}

/** An error answer of the server, with its JSON message. */
export class FlameApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

const settings = ServerConnection.makeSettings();

export async function request<T>(path: string, init: RequestInit = {}): Promise<T> {
  const url = URLExt.join(settings.baseUrl, 'flame/api', path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new FlameApiError(0, `The Jupyter server cannot be reached: ${error}`);
  }
  const text = await response.text();
  let body: any = {};
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    body = { message: text };
  }
  if (!response.ok) {
    throw new FlameApiError(response.status, body.message || response.statusText);
  }
  return body as T;
}

export const deleteRunner = (id: string): Promise<IRunner> =>
  request<IRunner>(`runners/${encodeURIComponent(id)}`, { method: 'DELETE' });

export const runnerLogs = (id: string, lines = 200): Promise<{ lines: string[] }> =>
  request(`runners/${encodeURIComponent(id)}/logs?lines=${lines}`);

export const orphans = (): Promise<{ orphans: IRunner[] }> => request('cleanup');

export const cleanup = (ids: string[]): Promise<{ deleted: IRunner[] }> =>
  request('cleanup', { method: 'POST', body: JSON.stringify({ ids }) });

/**
 * The runners, kept current by the server's event stream (server-sent events read through
 * fetch, so Jupyter's token and XSRF handling apply); reconnects with a growing delay.
 */
export class RunnersModel {
  snapshot: ISnapshot | null = null;
  error = '';
  private _changed = new Signal<this, void>(this);
  private _stopped = false;
  private _controller: AbortController | null = null;

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  start(): void {
    void this._loop();
  }

  dispose(): void {
    this._stopped = true;
    this._controller?.abort();
  }

  /** Ask again now (after an action) without waiting for the stream. */
  async refresh(): Promise<void> {
    try {
      this._set(await request<ISnapshot>('runners'), '');
    } catch (error) {
      this._fromError(error);
    }
  }

  private _set(snapshot: ISnapshot | null, error: string): void {
    if (snapshot) {
      this.snapshot = snapshot;
    }
    this.error = error;
    this._changed.emit();
  }

  private _fromError(error: unknown): void {
    this._set(null, error instanceof Error ? error.message : String(error));
  }

  private async _loop(): Promise<void> {
    let delay = 1000;
    while (!this._stopped) {
      try {
        await this._stream(() => {
          delay = 1000;
        });
      } catch (error) {
        if (this._stopped) {
          return;
        }
        this._fromError(error);
      }
      await new Promise(resolve => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 15000);
    }
  }

  private async _stream(connected: () => void): Promise<void> {
    this._controller = new AbortController();
    const url = URLExt.join(settings.baseUrl, 'flame/api/runners/stream');
    const response = await ServerConnection.makeRequest(
      url,
      { signal: this._controller.signal, headers: { Accept: 'text/event-stream' } },
      settings
    );
    if (!response.ok || !response.body) {
      let message = response.statusText;
      try {
        message = (await response.json()).message || message;
      } catch {
        // not JSON: keep the status text
      }
      throw new FlameApiError(response.status, message);
    }
    connected();
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        throw new FlameApiError(0, 'The runner stream ended; reconnecting.');
      }
      buffer += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split('\n')
          .filter(line => line.startsWith('data: '))
          .map(line => line.slice(6))
          .join('\n');
        if (data) {
          this._set(JSON.parse(data) as ISnapshot, '');
        }
      }
    }
  }
}
