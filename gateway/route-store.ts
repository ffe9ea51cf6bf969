import pg from 'pg';
import type { CanaryHash } from './canary.ts';
import type { Route, RouteMode, RouteTable } from './route-types.ts';

/** Where a gateway reads the route table from: the control database (DESIGN.md: the truth). */
export interface RouteStore {
  /** The whole table and its version, read in one statement (one consistent snapshot). */
  load(): Promise<RouteTable>;
  /** Only the version: cheap enough to poll every few seconds. */
  version(): Promise<number>;
  close(): Promise<void>;
}

/**
 * The control database's `<schema>.routes` and `<schema>.route_version`. Every query has a
 * deadline (`queryTimeoutMs`, client side, so it holds against a server that hangs too): a
 * timed-out query fails like a refused one, its connection is dropped, and the gateway keeps its
 * table.
 */
export function createPgRouteStore(databaseUrl: string, schema: string, options: { queryTimeoutMs?: number } = {}): RouteStore {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2, connectionTimeoutMillis: 2_000, idleTimeoutMillis: 10_000, query_timeout: options.queryTimeoutMs ?? 5_000 });
  pool.on('error', () => undefined); // an idle client dropped by a restarting server; the next query reconnects
  const s = `"${schema}"`;
  return {
    async load() {
      const { rows } = await pool.query(
        `SELECT v.version::text AS version,
                coalesce(json_agg(json_build_object('prefix', r.prefix, 'service', r.service, 'mode', r.mode, 'weight', r.weight::float8, 'methods', r.methods,
                                                    'fenced', coalesce(r.fenced AND r.fence_expires_at > now(), false),
                                                    'fenceMs', CASE WHEN r.fenced THEN extract(epoch FROM r.fence_expires_at - now()) * 1000 END,
                                                    'canaryHash', CASE WHEN r.mode = 'canary' THEN coalesce(r.canary_hash, 'fnv1a') END)
                                  ORDER BY length(r.prefix) DESC) FILTER (WHERE r.prefix IS NOT NULL), '[]') AS routes
           FROM ${s}.route_version v LEFT JOIN ${s}.routes r ON true
          GROUP BY v.version`,
      );
      if (rows.length === 0) throw new Error(`the control database has no ${schema}.route_version row; run: strangler control init`);
      // A fence's lease is read as time left (the database's clock) and kept as a deadline on ours.
      const now = Date.now();
      // An unscoped route (methods null: all methods) is carried without the field, as before scopes; canaryHash only on canaries.
      const routes = (rows[0].routes as Array<Route & { mode: RouteMode; fenceMs: number | null; canaryHash: CanaryHash | null }>).map(({ fenceMs, methods, canaryHash, ...r }) =>
        Object.freeze({ ...r, ...(methods ? { methods: Object.freeze([...methods]) } : {}), ...(r.fenced && fenceMs !== null ? { fenceUntil: now + fenceMs } : {}), ...(canaryHash ? { canaryHash } : {}) }),
      );
      return { version: Number(rows[0].version), routes };
    },
    async version() {
      const { rows } = await pool.query(`SELECT version::text AS version FROM ${s}.route_version`);
      return Number(rows[0]?.version ?? 0);
    },
    close: () => pool.end(),
  };
}
