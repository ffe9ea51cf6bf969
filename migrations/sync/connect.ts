import pg from 'pg';

/** How long the sync waits on a database before it takes it as gone (strangler.yaml sync). */
export interface SyncDeadlines {
  /** Opening a connection. */
  connectTimeoutMs: number;
  /** One statement of the worker (an apply, a bookkeeping write, a heartbeat). */
  queryTimeoutMs: number;
  /** Silence on the replication stream (no data, no keepalive, no answer to a ping). */
  receiveTimeoutMs: number;
}

export const DEFAULT_SYNC_DEADLINES: SyncDeadlines = { connectTimeoutMs: 10_000, queryTimeoutMs: 60_000, receiveTimeoutMs: 15_000 };

/**
 * A connection of the sync with deadlines: a server that hangs (a frozen host, a network black
 * hole: the TCP connection stays open, nothing answers) is treated like one that is down, so
 * the worker reconnects instead of waiting for ever. `longRunning` connections (COPY of a
 * backfill, the replication stream, a verify's reads) get no per-statement deadline.
 */
export function syncClient(url: string, deadlines: Partial<SyncDeadlines> = {}, options: { longRunning?: boolean; replication?: boolean } = {}): pg.Client {
  const d = { ...DEFAULT_SYNC_DEADLINES, ...deadlines };
  return new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: d.connectTimeoutMs,
    keepAlive: true,
    ...(options.longRunning ? {} : { query_timeout: d.queryTimeoutMs }),
    ...(options.replication ? { replication: 'database' } : {}),
  } as pg.ClientConfig);
}
