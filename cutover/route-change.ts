import type { Redis } from 'ioredis';
import type pg from 'pg';
import { withDeadline } from '../core/deadline.ts';
import { StranglerError } from '../core/errors.ts';
import { DEFAULT_CANARY_HASH, type CanaryHash } from '../gateway/canary.ts';
import type { RedisKeys } from '../gateway/redis-keys.ts';
import type { Route, RouteMode } from '../gateway/route-types.ts';
import type { CheckResult, Phase } from './state-machine.ts';

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

/** Default lease of a fence written without one (a test, a bench): see control.fenceLeaseMs. */
const DEFAULT_FENCE_LEASE_MS = 30_000;

/** The one INSERT of an audit row (every change, refusal and fence is recorded through it). */
export async function insertAudit(client: pg.PoolClient | pg.Client | pg.Pool, schema: string, audit: AuditEntry, route?: { before: Route[]; after: Route[]; version: number }): Promise<number> {
  const one = (r: Route[]) => (r.length ? JSON.stringify(r.length === 1 ? r[0] : r) : null);
  const { rows } = await client.query(
    `INSERT INTO "${schema}".audit_log (actor, command, service, prefix, from_phase, to_phase, from_route, to_route, route_version, reason, forced, outcome, details)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id::text AS id`,
    [
      audit.actor,
      audit.command,
      audit.service ?? null,
      audit.prefix ?? route?.after[0]?.prefix ?? null,
      audit.fromPhase ?? null,
      audit.toPhase ?? null,
      route ? one(route.before) : null,
      route ? one(route.after) : null,
      route?.version ?? null,
      audit.reason ?? null,
      audit.forced ?? false,
      audit.outcome,
      JSON.stringify(audit.details ?? {}),
    ],
  );
  return Number(rows[0].id);
}

/**
 * Inside an open transaction: bumps the global version (its row lock serialises every route
 * change across all operators) and writes the routes. A fenced route gets its lease. A canary
 * keeps the hash it began with while it stays a canary of the same service (a weight change, a
 * scope, a fence), so no user changes side; a new canary gets xxh32 (gateway/canary.ts).
 */
async function writeRoutes(client: pg.PoolClient | pg.Client, schema: string, routes: Route[], fenceLeaseMs: number): Promise<{ version: number; before: Route[] }> {
  const s = `"${schema}"`;
  const { rows: v } = await client.query(`UPDATE ${s}.route_version SET version = version + 1, changed_at = now() RETURNING version::text AS version`);
  const version = Number(v[0].version);
  const before: Route[] = [];
  for (const route of routes) {
    const { rows: old } = await client.query(`SELECT prefix, service, mode, weight::float8 AS weight, methods, fenced, canary_hash FROM ${s}.routes WHERE prefix = $1`, [route.prefix]);
    const was = old[0] as (Route & { canary_hash: CanaryHash | null }) | undefined;
    if (was) {
      const { canary_hash: _, ...rest } = was;
      before.push(rest);
    }
    // The column as it stands for a running canary (null, read as fnv1a, included).
    const runningCanary = was?.mode === 'canary' && was.service === route.service;
    const canaryHash = route.mode !== 'canary' ? null : runningCanary ? was.canary_hash : DEFAULT_CANARY_HASH;
    await client.query(
      `INSERT INTO ${s}.routes (prefix, service, mode, weight, methods, fenced, fence_expires_at, version, canary_hash, updated_at)
       VALUES ($1, $2, $3, $4, $8, $5, CASE WHEN $5 THEN now() + $6 * interval '1 millisecond' END, $7, $9, now())
       ON CONFLICT (prefix) DO UPDATE SET service = excluded.service, mode = excluded.mode, weight = excluded.weight, methods = excluded.methods, fenced = excluded.fenced,
         fence_expires_at = excluded.fence_expires_at, version = excluded.version, canary_hash = excluded.canary_hash, updated_at = now()`,
      [route.prefix, route.service, route.mode, route.weight, route.fenced ?? false, fenceLeaseMs, version, route.methods?.length ? [...route.methods] : null, canaryHash],
    );
  }
  return { version, before };
}

/**
 * Commits route changes and their audit row in one transaction that bumps the global version
 * (DESIGN.md), with no expectation about what was there: for tests and benches that set routes
 * directly. The control plane's changes go through `commitChange`.
 */
export async function commitRouteChange(client: pg.PoolClient | pg.Client, schema: string, routes: Route[], audit: AuditEntry, options: { fenceLeaseMs?: number } = {}): Promise<{ version: number; auditId: number; before: Route[] }> {
  routes = routes.map((r) => ({ ...r, fenced: r.fenced ?? false }));
  await client.query('BEGIN');
  try {
    const { version, before } = await writeRoutes(client, schema, routes, options.fenceLeaseMs ?? DEFAULT_FENCE_LEASE_MS);
    const auditId = await insertAudit(client, schema, audit, { before, after: routes, version });
    await client.query('COMMIT');
    return { version, auditId, before };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/** What a change read when it was planned, and expects to find still current when it commits. */
export interface Planned {
  phase: Phase;
  /** The global version at which the prefix's route last changed (0: never). */
  routeVersion: number;
}

/** One change of one service's prefix, as the control plane commits it. */
export interface ChangeWrite {
  service: string;
  prefix: string;
  /** Compare-and-set: refused when the phase or the route changed since. null: applies to whatever is current (a rollback always wins). */
  expect: Planned | null;
  /** The fence this change was planned under must still hold its lease (a switch after its drain). */
  expectFence?: boolean;
  /** The new route; absent when only the phase (or only the record) changes. */
  route?: { mode: RouteMode; weight: number; methods?: readonly string[] | null; fenced?: boolean };
  /** The new phase (and a progressive canary's progress); absent when the phase stays. */
  phase?: { phase: Phase; progress: unknown };
  audit: AuditEntry;
  checks?: readonly CheckResult[];
  /** Runs after the commit, before the gateways are told (a failure there is ignored: the change stands). */
  afterCommit?: () => Promise<void>;
}

export interface WriteDeps {
  pool: pg.Pool;
  schema: string;
  redis: Redis;
  keys: RedisKeys;
  ackTimeoutMs: number;
  liveWithinMs: number;
  fenceLeaseMs: number;
  /** Told at each look at the gateways' acknowledgements while a version propagates (the CLI's progress). */
  onAckWait?: (w: AckWait) => void;
}

/** Where the wait for the gateways' acknowledgements of a route version stands. */
export interface AckWait {
  version: number;
  acknowledged: number;
  live: number;
  ms: number;
  /** The last look: every live gateway acknowledged, or the wait timed out. */
  done: boolean;
}

export interface Committed {
  auditId: number;
  /** The route's new version (a route was written), else null. */
  version: number | null;
  /** What the next change of this prefix expects to find. */
  planned: Planned;
  propagation?: Propagation;
}

/**
 * The control plane's one write path: check (compare-and-set against what the change was planned
 * on), commit (route, phase, audit row and check results in one transaction), then publish and
 * wait for every live gateway. A change planned before someone else's is refused (CONFLICT, exit
 * 2) naming that change, and the refusal is recorded. Rule 8: the route and its record never
 * disagree.
 */
export async function commitChange(deps: WriteDeps, w: ChangeWrite): Promise<Committed> {
  const s = `"${deps.schema}"`;
  const client = await deps.pool.connect();
  let conflict: string | null = null;
  let committed: Committed;
  try {
    await client.query('BEGIN');
    try {
      // Serialises every write of the control plane, so what is read below cannot change before COMMIT.
      if (w.expect || w.route || w.phase) await client.query(`SELECT version FROM ${s}.route_version FOR UPDATE`);
      const { rows: cur } = await client.query(
        `SELECT coalesce(st.phase, 'legacy') AS phase, coalesce(r.version, 0)::int AS route_version, coalesce(r.fenced AND r.fence_expires_at > now(), false) AS fence_held
           FROM (SELECT 1) one LEFT JOIN ${s}.routes r ON r.prefix = $1 LEFT JOIN ${s}.service_state st ON st.service = $2`,
        [w.prefix, w.service],
      );
      const now: Planned = { phase: cur[0].phase, routeVersion: cur[0].route_version };
      if (w.expect && (now.phase !== w.expect.phase || now.routeVersion !== w.expect.routeVersion)) {
        conflict = await describeChangeSince(client, deps.schema, w);
      } else if (w.expectFence && !cur[0].fence_held) {
        conflict = `the write hold on ${w.prefix} lapsed (its lease is ${deps.fenceLeaseMs} ms, control.fenceLeaseMs) before this ${w.audit.command} could commit, so writes went on under the old route; nothing changed; run it again`;
      }
      if (conflict) {
        await client.query('ROLLBACK');
      } else {
        const route: Route | undefined = w.route ? { prefix: w.prefix, service: w.service, mode: w.route.mode, weight: w.route.weight, methods: w.route.methods ?? null, fenced: w.route.fenced ?? false } : undefined;
        const written = route ? await writeRoutes(client, deps.schema, [route], deps.fenceLeaseMs) : null;
        const auditId = await insertAudit(client, deps.schema, w.audit, written && route ? { before: written.before, after: [route], version: written.version } : undefined);
        if (w.phase) {
          await client.query(
            `INSERT INTO ${s}.service_state (service, prefix, phase, progress) VALUES ($1, $2, $3, $4)
             ON CONFLICT (service) DO UPDATE SET phase = excluded.phase, progress = excluded.progress, updated_at = now(),
               phase_since = CASE WHEN ${s}.service_state.phase = excluded.phase THEN ${s}.service_state.phase_since ELSE now() END`,
            [w.service, w.prefix, w.phase.phase, w.phase.progress ? JSON.stringify(w.phase.progress) : null],
          );
        }
        await insertChecks(client, deps.schema, auditId, w.service, w.checks ?? [], w.audit.forced ?? false);
        await client.query('COMMIT');
        committed = { auditId, version: written?.version ?? null, planned: { phase: w.phase?.phase ?? now.phase, routeVersion: written?.version ?? now.routeVersion } };
      }
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
    if (conflict) {
      await insertAudit(client, deps.schema, { ...w.audit, outcome: 'refused', details: { ...w.audit.details, why: conflict } });
      throw new StranglerError(conflict, 'CONFLICT', { changedMeanwhile: true });
    }
  } finally {
    client.release();
  }
  if (w.afterCommit) await withDeadline(w.afterCommit(), REDIS_CALL_MS, 'after the commit').catch(() => undefined);
  if (committed!.version === null) return committed!;
  return { ...committed!, propagation: await publishAndWait(deps.redis, deps.keys, committed!.version, { timeoutMs: deps.ackTimeoutMs, liveWithinMs: deps.liveWithinMs, onWait: deps.onAckWait }) };
}

/** The one INSERT of check results, each with the audit row of the change it decided. */
export async function insertChecks(client: pg.PoolClient | pg.Client | pg.Pool, schema: string, auditId: number | null, service: string, checks: readonly CheckResult[], forced: boolean): Promise<void> {
  for (const c of checks) {
    await client.query(`INSERT INTO "${schema}".check_results (audit_id, service, name, ok, retriable, reason, forced) VALUES ($1, $2, $3, $4, $5, $6, $7)`, [auditId, service, c.name, c.ok, c.retriable, c.reason, forced && !c.ok]);
  }
}

/** "the route of /api/x changed since this shadow was planned: v5 rolled-back by ana at …; run it again" */
async function describeChangeSince(client: pg.PoolClient, schema: string, w: ChangeWrite): Promise<string> {
  const { rows } = await client.query(
    `SELECT route_version::int AS version, to_phase, actor, command, at FROM "${schema}".audit_log WHERE prefix = $1 AND outcome = 'applied' ORDER BY id DESC LIMIT 1`,
    [w.prefix],
  );
  const last = rows[0];
  const what = last ? `${last.version ? `v${last.version} ` : ''}${last.to_phase ?? last.command} by ${last.actor} at ${new Date(last.at).toISOString()} (${last.command})` : 'its state was reset';
  return `the route of ${w.prefix} changed since this ${w.audit.command} was planned: ${what}; nothing changed; run it again`;
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
  /** Its data plane engine (gateway.engine): node, or haproxy (which cannot shadow). */
  engine: 'node' | 'haproxy';
}

/**
 * Pure: why a shadow phase would mirror nothing, or null. Mirroring is the Node engine's (HAProxy
 * 2.6 has no request mirroring): live gateways that are all HAProxy would serve the prefix from
 * legacy without comparing anything, and the shadow checks would wait for samples that never come.
 */
export function shadowProblem(live: readonly Pick<GatewayInstance, 'id' | 'engine'>[]): string | null {
  if (live.length === 0 || live.some((g) => g.engine === 'node')) return null;
  return `no live gateway can shadow: ${live.map((g) => g.id).join(', ')} run${live.length === 1 ? 's' : ''} the HAProxy engine, which does not mirror requests; run a Node gateway beside them for the shadow phase (strangler gateway), or skip shadow with --canary`;
}

/** Gateways whose heartbeat is younger than `liveWithinMs`. */
export async function liveGateways(redis: Redis, keys: RedisKeys, liveWithinMs: number): Promise<GatewayInstance[]> {
  const now = Date.now();
  const ids = await redis.zrangebyscore(keys.gateways, now - liveWithinMs, '+inf');
  const out: GatewayInstance[] = [];
  for (const id of ids) {
    const h = await redis.hgetall(keys.gateway(id));
    if (!h.version) continue;
    out.push({ id, version: Number(h.version), degraded: h.degraded === '1', host: h.host, pid: Number(h.pid), heartbeatAt: Number(h.heartbeatAt), engine: h.engine === 'haproxy' ? 'haproxy' : 'node', ...(h.zone ? { zone: h.zone } : {}) });
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
  /** Why the acknowledgements could not be read (Redis down or hung): the change is committed, gateways get it by polling. */
  error?: string;
}

/** Deadline of each Redis call while waiting: a hung Redis counts as down. */
const REDIS_CALL_MS = 2_000;

/**
 * Notifies the gateways of a committed version and waits until every live one has applied it
 * (or `timeoutMs` passes). A gateway that misses the message still gets there by polling. Never
 * throws: the version is committed whatever Redis does, and an unreadable acknowledgement is an
 * incomplete propagation that says why.
 */
export async function publishAndWait(redis: Redis, keys: RedisKeys, version: number, options: { timeoutMs: number; liveWithinMs: number; onWait?: (w: AckWait) => void }): Promise<Propagation> {
  const started = Date.now();
  try {
    await withDeadline(redis.publish(keys.routesChanged, String(version)), REDIS_CALL_MS, 'Redis (PUBLISH)');
    for (;;) {
      const live = await withDeadline(liveGateways(redis, keys, options.liveWithinMs), REDIS_CALL_MS, 'Redis (gateway heartbeats)');
      const missing = live.filter((g) => g.version < version).map((g) => g.id);
      const ms = Date.now() - started;
      options.onWait?.({ version, acknowledged: live.length - missing.length, live: live.length, ms, done: missing.length === 0 || ms >= options.timeoutMs });
      if (missing.length === 0 || ms >= options.timeoutMs) {
        return { version, acknowledged: live.length - missing.length, live: live.length, ms, complete: missing.length === 0, missing };
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  } catch (err) {
    const reason = `Redis is unavailable (${(err as Error).message.split('\n')[0]}); the gateways apply v${version} when they next poll the control database`;
    return { version, acknowledged: 0, live: 0, ms: Date.now() - started, complete: false, missing: [], error: reason };
  }
}
