import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { RedisKeys } from '../gateway/redis-keys.ts';
import type { Route } from '../gateway/route-types.ts';

export interface AuditEntry {
  actor: string;
  command: string;
  service?: string;
  prefix?: string;
  fromPhase?: string | null;
  toPhase?: string | null;
  reason?: string | null;
  forced?: boolean;
  outcome: string;
  details?: Record<string, unknown>;
}

/**
 * Commits route changes and their audit row in one transaction that bumps the global version
 * (DESIGN.md). Returns the new version and the audit id. The caller notifies the gateways after
 * the commit, never before: a gateway that reloads early would read the old version.
 */
export async function commitRouteChange(
  client: pg.PoolClient | pg.Client,
  schema: string,
  routes: Route[],
  audit: AuditEntry,
  /** More writes in the same transaction (the service's new phase, check results). */
  alsoInTransaction?: (client: pg.PoolClient | pg.Client, ids: { version: number; auditId: number }) => Promise<void>,
): Promise<{ version: number; auditId: number; before: Route[] }> {
  const s = `"${schema}"`;
  routes = routes.map((r) => ({ ...r, fenced: r.fenced ?? false }));
  await client.query('BEGIN');
  try {
    // The row lock on route_version serialises every route change across all operators.
    const { rows: v } = await client.query(`UPDATE ${s}.route_version SET version = version + 1, changed_at = now() RETURNING version::text AS version`);
    const version = Number(v[0].version);
    const before: Route[] = [];
    for (const route of routes) {
      const { rows: old } = await client.query(`SELECT prefix, service, mode, weight::float8 AS weight, fenced FROM ${s}.routes WHERE prefix = $1`, [route.prefix]);
      if (old[0]) before.push(old[0]);
      await client.query(
        `INSERT INTO ${s}.routes (prefix, service, mode, weight, fenced, version, updated_at) VALUES ($1, $2, $3, $4, $5, $6, now())
         ON CONFLICT (prefix) DO UPDATE SET service = excluded.service, mode = excluded.mode, weight = excluded.weight, fenced = excluded.fenced, version = excluded.version, updated_at = now()`,
        [route.prefix, route.service, route.mode, route.weight, route.fenced ?? false, version],
      );
    }
    const { rows: a } = await client.query(
      `INSERT INTO ${s}.audit_log (actor, command, service, prefix, from_phase, to_phase, from_route, to_route, route_version, reason, forced, outcome, details)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id::text AS id`,
      [
        audit.actor,
        audit.command,
        audit.service ?? null,
        audit.prefix ?? routes[0]?.prefix ?? null,
        audit.fromPhase ?? null,
        audit.toPhase ?? null,
        before.length ? JSON.stringify(before.length === 1 ? before[0] : before) : null,
        JSON.stringify(routes.length === 1 ? routes[0] : routes),
        version,
        audit.reason ?? null,
        audit.forced ?? false,
        audit.outcome,
        JSON.stringify(audit.details ?? {}),
      ],
    );
    const auditId = Number(a[0].id);
    await alsoInTransaction?.(client, { version, auditId });
    await client.query('COMMIT');
    return { version, auditId, before };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

export interface GatewayInstance {
  id: string;
  version: number;
  degraded: boolean;
  host: string;
  pid: number;
  heartbeatAt: number;
  /** Its zone, when it routes zone-aware. */
  zone?: string;
}

/** Gateways whose heartbeat is younger than `liveWithinMs`. */
export async function liveGateways(redis: Redis, keys: RedisKeys, liveWithinMs: number): Promise<GatewayInstance[]> {
  const now = Date.now();
  const ids = await redis.zrangebyscore(keys.gateways, now - liveWithinMs, '+inf');
  const out: GatewayInstance[] = [];
  for (const id of ids) {
    const h = await redis.hgetall(keys.gateway(id));
    if (!h.version) continue;
    out.push({ id, version: Number(h.version), degraded: h.degraded === '1', host: h.host, pid: Number(h.pid), heartbeatAt: Number(h.heartbeatAt), ...(h.zone ? { zone: h.zone } : {}) });
  }
  // Entries older than an hour belong to gateways long gone.
  await redis.zremrangebyscore(keys.gateways, '-inf', now - 3_600_000);
  return out;
}

export interface Propagation {
  version: number;
  acknowledged: number;
  live: number;
  ms: number;
  complete: boolean;
  missing: string[];
}

/**
 * Notifies the gateways of a committed version and waits until every live one has applied it
 * (or `timeoutMs` passes). A gateway that misses the message still gets there by polling.
 */
export async function publishAndWait(redis: Redis, keys: RedisKeys, version: number, options: { timeoutMs: number; liveWithinMs: number }): Promise<Propagation> {
  const started = Date.now();
  await redis.publish(keys.routesChanged, String(version));
  for (;;) {
    const live = await liveGateways(redis, keys, options.liveWithinMs);
    const missing = live.filter((g) => g.version < version).map((g) => g.id);
    const ms = Date.now() - started;
    if (missing.length === 0 || ms >= options.timeoutMs) {
      return { version, acknowledged: live.length - missing.length, live: live.length, ms, complete: missing.length === 0, missing };
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}
