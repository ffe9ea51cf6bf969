import { readSnapshot, type DashboardSnapshot, type SnapshotDeps } from './snapshot.ts';

type State = 'created' | 'active' | 'stopping' | 'stopped';

/**
 * The dashboard's live loop: reads a snapshot every `refreshMs` while a page is open (and at
 * once when asked, after an action, or when a page opens) and hands each one that changed to
 * the listeners (the SSE streams). With no page open it reads every `idleRefreshMs` only: each
 * read asks the control database, Redis and every pipeline's database what `status` asks, and
 * the lag chart's history needs no more. A failed read is kept as `error` for the page to
 * show, and the loop goes on (rule 10).
 */
export function createDashboard(deps: SnapshotDeps & { refreshMs: number; idleRefreshMs?: number; onError?: (err: Error) => void }) {
  const idleRefreshMs = deps.idleRefreshMs ?? 30_000;
  let state: State = 'created';
  let reads = 0;
  let readAt = 0;
  let current: DashboardSnapshot | null = null;
  let error: string | null = null;
  let lastBody = '';
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<void> | null = null;
  let again = false;
  const listeners = new Set<(body: string) => void>();

  /** The JSON the page gets: the snapshot and the last read's error. */
  const body = () => JSON.stringify({ snapshot: current, error });

  async function tick(): Promise<void> {
    reads++;
    readAt = Date.now();
    try {
      current = await readSnapshot(deps);
      error = null;
    } catch (err) {
      error = `could not read the migration's state: ${(err as Error).message}`;
      deps.onError?.(err as Error);
    }
    const next = body();
    // The time of the read alone is no news: compare without it.
    const comparable = next.replace(/"at":"[^"]*"/, '');
    if (comparable !== lastBody) {
      lastBody = comparable;
      for (const l of listeners) l(next);
    }
  }

  /** Runs a read now, or right after the one under way (so an action's result is never missed). */
  function refresh(): Promise<void> {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        await tick();
      } while (again && state === 'active');
    })().finally(() => (running = null));
    return running;
  }

  function schedule(): void {
    if (state !== 'active') return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => void refresh().finally(schedule), listeners.size > 0 ? deps.refreshMs : idleRefreshMs);
  }

  /** A read now when the last one is older than a page's refresh, then the page's pace. */
  async function fresh(): Promise<void> {
    if (state === 'active' && Date.now() - readAt >= deps.refreshMs) await refresh();
    schedule();
  }

  return {
    async start(): Promise<void> {
      if (state !== 'created') return;
      state = 'active';
      await refresh();
      schedule();
    },
    async stop(): Promise<void> {
      if (state === 'stopping' || state === 'stopped') return;
      state = 'stopping';
      if (timer) clearTimeout(timer);
      await running?.catch(() => undefined);
      listeners.clear();
      state = 'stopped';
    },
    refresh,
    /** Reads now if the last read is older than `refreshMs` (a page asked with no stream open). */
    fresh,
    /** The latest JSON body ({ snapshot, error }). */
    body,
    /** Snapshots read so far. */
    get reads(): number {
      return reads;
    },
    /** Calls `listener` with every changed body, at a page's pace from now on (a read now if the last is old); returns the unsubscribe. */
    subscribe(listener: (body: string) => void): () => void {
      listeners.add(listener);
      if (listeners.size === 1) void fresh();
      return () => listeners.delete(listener);
    },
  };
}

export type Dashboard = ReturnType<typeof createDashboard>;
