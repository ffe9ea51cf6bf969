import { hostname, userInfo } from 'node:os';
import type { Redis } from 'ioredis';
import pg from 'pg';
import type { ResolvedConfig, ResolvedService } from '../core/config/load.ts';
import { serviceForPrefix } from '../core/config/load.ts';
import { StranglerError } from '../core/errors.ts';
import { feedsOf } from '../migrations/sync/plan.ts';
import type { PendingHandover } from '../migrations/sync/handover.ts';
import type { RedisKeys } from '../gateway/redis-keys.ts';
import type { RouteMode } from '../gateway/route-types.ts';
import { DEFAULT_THRESHOLDS, type CheckThresholds } from './checks.ts';
import { controlStore, type ControlStore, type Progress, type StoredStatus } from './control-store.ts';
import { observeSync, runChecks, type ProbeContext } from './probes.ts';
import { commitChange, liveGateways, shadowProblem, type AckWait, type AuditEntry, type Planned, type Propagation, type WriteDeps } from './route-change.ts';
import { next, plan, routeFor, scopeLabel, writesReachService, type Action, type CheckResult, type Command, type MethodScope, type ServiceStatus } from './state-machine.ts';

export interface CutoverContext {
  config: ResolvedConfig;
  pool: pg.Pool;
  redis: Redis;
  keys: RedisKeys;
  actor: string;
  thresholds?: Partial<CheckThresholds>;
  /** How long to wait for every live gateway to acknowledge a route version. */
  ackTimeoutMs?: number;
  /** Progress of those waits (the CLI draws it). */
  onAckWait?: (w: AckWait) => void;
}

export interface ChangeOptions {
  reason?: string | null;
  force?: boolean;
  dryRun?: boolean;
  /** Window of figures the canary analysis reads (default 60 s). */
  analysisWindowMs?: number;
  progress?: Progress | null;
  /** The lock is already held by the caller (progressive canary). */
  locked?: boolean;
  /** Limits for this change's checks only (a progressive canary's --max-error-rate, --max-p99-ms). */
  thresholds?: Partial<CheckThresholds>;
}

export interface ChangeOutcome {
  prefix: string;
  service: string;
  command: string;
  from: ServiceStatus;
  to: ServiceStatus;
  checks: CheckResult[];
  actions: Action[];
  forced: boolean;
  dryRun: boolean;
  warnings: string[];
  auditId?: number;
  propagation?: Propagation;
  /** How long writes to the prefix were held at the gateways (switch and rollback). */
  writeHoldMs?: number;
}

/** The actor recorded in the audit log: --actor, else STRANGLER_ACTOR, else the OS user. */
export function resolveActor(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (flag) return flag;
  if (env.STRANGLER_ACTOR) return env.STRANGLER_ACTOR;
  try {
    return `${userInfo().username}@${hostname()}`;
  } catch {
    return `pid ${process.pid}@${hostname()}`;
  }
}

/** Whether a service writes (owns tables it is not a read-only copy of): only those need reverse sync. */
export function takesWrites(service: ResolvedService): boolean {
  return !service.readOnly && service.tables.some((t) => !t.replica);
}

/**
 * What must already run before the actions may: reverse sync before the first write can reach
 * a writing service (so a rollback loses nothing). Reasons, or [] when all is in place.
 */
export async function actionProblems(config: ResolvedConfig, actions: readonly Action[], service: ResolvedService): Promise<string[]> {
  if (actions.some((a) => a.kind === 'stop-reverse-sync')) {
    // Finalizing stops the reverse sync, so legacy stops receiving the service's writes: every
    // copy of its tables must be able to move to its database (finalize moves those still on legacy).
    const { feedStates } = await import('../migrations/sync/handover.ts');
    const missing = (await feedStates(config, service)).filter((f) => !f.exists);
    return missing.map(
      (f) => `${f.service} keeps a copy of ${f.tables.join(', ')} fed from legacy, and its feed from ${service.name} does not run; finalizing ${service.name} stops its reverse sync, so that copy would stop receiving its writes. Start it first: strangler sync start ${f.service}`,
    );
  }
  if (!takesWrites(service) || !actions.some((a) => a.kind === 'start-reverse-sync' || a.kind === 'fence-writes')) return [];
  const reverse = await observeSync(config, service, 'reverse');
  if (!reverse || !reverse.state.startsWith('streaming')) {
    return [`reverse sync (${service.name} → legacy) does not run${reverse ? ` (${reverse.state})` : ''}: writes the service takes would not reach legacy and a rollback would lose them; start it first: strangler sync start ${service.name} --reverse`];
  }
  return [];
}

export function createCutover(ctx: CutoverContext) {
  const store: ControlStore = controlStore(ctx.pool, ctx.config.control.schema);
  const thresholds: CheckThresholds = {
    ...DEFAULT_THRESHOLDS,
    maxLagBytes: ctx.config.sync.maxLagBytes,
    maxLagSeconds: ctx.config.sync.maxLagSeconds,
    ...ctx.thresholds,
  };
  const liveWithinMs = Math.max(3_000, ctx.config.gateway.heartbeatIntervalMs * 3);
  const holder = `${ctx.actor} (pid ${process.pid}@${hostname()})`;
  const probe = (windowMs: number, overrides: Partial<CheckThresholds> = {}): ProbeContext => ({ config: ctx.config, redis: ctx.redis, keys: ctx.keys, store, thresholds: { ...thresholds, ...overrides }, analysisWindowMs: windowMs, liveWithinMs });

  const writes: WriteDeps = { pool: ctx.pool, schema: ctx.config.control.schema, redis: ctx.redis, keys: ctx.keys, ackTimeoutMs: ctx.ackTimeoutMs ?? 5_000, liveWithinMs, fenceLeaseMs: ctx.config.control.fenceLeaseMs, onAckWait: ctx.onAckWait };
  const record = (service: ResolvedService, command: string, fromPhase: string, toPhase: string | null, more: Partial<AuditEntry> = {}): AuditEntry => ({ actor: ctx.actor, command, service: service.name, prefix: service.prefix, fromPhase, toPhase, outcome: 'applied', ...more });

  /**
   * Applies a decided transition through the one write path. `planned` is what the change was
   * planned on (compare-and-set at every commit); null for a rollback, which applies to whatever
   * is current. A switch or a rollback first fences writes (under a lease); the final commit of a
   * switch also needs that fence to still hold.
   */
  async function applyTransition(service: ResolvedService, from: StoredStatus, to: ServiceStatus, actions: Action[], audit: { command: string; reason: string | null; forced: boolean; checks: CheckResult[]; details?: Record<string, unknown> }, progress: Progress | null, planned: Planned | null) {
    const setRoute = actions.find((a) => a.kind === 'set-route') as Extract<Action, { kind: 'set-route' }> | undefined;
    const fenced = actions.some((a) => a.kind === 'fence-writes') && setRoute ? await fence(service, from, to, planned) : null;
    const moved = actions.some((a) => a.kind === 'stop-reverse-sync') ? await copiesToOwner(service, from, planned) : { warnings: [], planned };
    const committed = await commitChange(writes, {
      service: service.name,
      prefix: service.prefix,
      expect: fenced ? planned && fenced.planned : moved.planned,
      expectFence: !!fenced && planned !== null,
      route: setRoute ? { mode: setRoute.mode, weight: setRoute.weight, methods: setRoute.methods } : undefined,
      phase: { phase: to.phase, progress },
      audit: record(service, audit.command, from.phase, to.phase, { reason: audit.reason, forced: audit.forced, details: audit.details }),
      checks: audit.checks,
      // A new shadow phase measures afresh: counts, samples and noise of an earlier one do not carry over.
      afterCommit: setRoute?.mode === 'shadow' ? () => ctx.redis.del(ctx.keys.shadowCounts(service.name), ctx.keys.shadowSamples(service.name), ctx.keys.shadowNoise(service.name)).then(() => undefined) : undefined,
    });
    const propagation = committed.propagation;
    if (!fenced) return { auditId: committed.auditId, propagation, warnings: moved.warnings };
    const writeHoldMs = Date.now() - fenced.heldAt;
    // The writes are released; now see the copies' pipelines through their handover.
    const copies = fenced.handover ? await confirmCopies(fenced.handover) : [];
    return { auditId: committed.auditId, propagation, writeHoldMs, warnings: [...fenced.warnings, ...copies] };
  }

  /**
   * Lifts a fence this command set, on the route it fenced. Someone else's change since (a
   * rollback) already lifted it: then there is nothing to do.
   */
  async function release(service: ResolvedService, from: StoredStatus, fenced: Planned, route: { mode: RouteMode; weight: number; methods: MethodScope }, command: string, outcome: string): Promise<Planned> {
    try {
      return (await commitChange(writes, { service: service.name, prefix: service.prefix, expect: fenced, route: { ...route, fenced: false }, audit: record(service, command, from.phase, from.phase, { outcome }) })).planned;
    } catch (err) {
      if (err instanceof StranglerError && err.code === 'CONFLICT') return fenced;
      throw err;
    }
  }

  /**
   * The switchover fence: hold writes to the prefix at every gateway (each acknowledges only
   * once its in-flight writes there have finished), then drain the sync in the direction that
   * matters to a fence message, so the side about to take the writes has every write the other
   * side acknowledged. The caller then flips the route, which releases the held writes to it.
   * The fence carries a lease (control.fenceLeaseMs): killed here, this command cannot hold
   * writes past it. Ids need no step: each side's sequences live in their own range.
   */
  async function fence(service: ResolvedService, from: StoredStatus, to: ServiceStatus, planned: Planned | null): Promise<{ heldAt: number; warnings: string[]; handover: PendingHandover | null; planned: Planned }> {
    const current = (await routeOf(service.prefix)) ?? { mode: 'legacy' as RouteMode, weight: 0, methods: null };
    const route = { mode: current.mode as RouteMode, weight: current.weight, methods: current.methods };
    const held = await commitChange(writes, { service: service.name, prefix: service.prefix, expect: planned, route: { ...route, fenced: true }, audit: record(service, 'fence: hold writes', from.phase, from.phase) });
    const heldAt = Date.now();
    const switching = to.phase === 'switched' && planned !== null;
    if (switching && !held.propagation?.complete) {
      // A gateway that did not confirm the hold may still send writes the old way: a drain proves nothing.
      const p = held.propagation!;
      await release(service, from, held.planned, route, 'fence: release (not confirmed)', 'refused');
      throw new StranglerError(`the write hold on ${service.prefix} was not confirmed by every gateway (${p.error ?? `not acknowledged by: ${p.missing.join(', ')}`}); nothing changed; see: strangler status`, 'CHECK_FAILED');
    }
    const direction = to.phase === 'switched' ? 'forward' : 'reverse';
    const warnings: string[] = [];
    const { drainPipeline } = await import('../migrations/sync/status.ts');
    const budget = (slack: number) => Math.max(1_000, ctx.config.gateway.fenceHoldMs - (Date.now() - heldAt) - slack);
    // Copies other services keep of this service's tables follow the writes: from the owner's
    // database once it is switched, from legacy again when it is rolled back from there. Their
    // handover needs both directions drained: the other one drains at the same time.
    const handover = to.phase === 'switched' ? 'owner' : from.phase === 'switched' ? 'legacy' : null;
    const movesCopies = handover !== null && feedsOf(ctx.config.services, service).length > 0;
    const other = direction === 'forward' ? 'reverse' : 'forward';
    // A failure there counts as not drained (copies stay), and is never left unhandled.
    const otherDrained = movesCopies && takesWrites(service) ? drainPipeline(ctx.config, service, other, budget(250)).catch(() => null) : Promise.resolve(true);
    if (direction === 'forward' || takesWrites(service)) {
      const drained = await drainPipeline(ctx.config, service, direction, budget(500));
      if (drained === null) {
        if (to.phase === 'switched') {
          await otherDrained;
          // Release the hold on the old routing and refuse: nothing changed.
          await release(service, from, held.planned, route, 'fence: release (drain timed out)', 'refused');
          throw new StranglerError(`the ${direction} sync of ${service.name} did not drain while writes were held; nothing changed (see: strangler sync status ${service.name})`, 'CHECK_FAILED');
        }
        warnings.push(`the ${direction} sync of ${service.name} did not drain in time; the rollback went ahead, check: strangler sync status ${service.name}${direction === 'reverse' ? ' --reverse' : ''}`);
      }
    }
    let pending: PendingHandover | null = null;
    if (movesCopies) {
      if ((await otherDrained) === null) {
        warnings.push(`the ${other} sync of ${service.name} did not drain in time, so the copies other services keep of its tables were not moved to ${handover === 'owner' ? service.name : 'legacy'}; they stay on their current source (see: strangler sync status ${service.name})`);
      } else {
        // At this quiet point legacy and the owner's database hold the same rows (handover.ts).
        // Only writing the messages happens under the hold; the pipelines apply them in order
        // on their own (worker.ts), and the caller confirms that after releasing the writes.
        const { emitHandover } = await import('../migrations/sync/handover.ts');
        pending = await emitHandover(ctx.config, service, handover!);
      }
    }
    return { heldAt, warnings, handover: pending, planned: held.planned };
  }

  /** After the hold: waits (a few seconds at most) for every copy's pipelines to pass their handover. */
  async function confirmCopies(pending: PendingHandover): Promise<string[]> {
    const { confirmHandover } = await import('../migrations/sync/handover.ts');
    return (await confirmHandover(pending, 10_000)).warnings;
  }

  /**
   * Before finalizing: copies of the service's tables still fed from legacy (their sync started
   * after the switch) move to its database, under a write hold on the unchanged route.
   */
  async function copiesToOwner(service: ResolvedService, from: StoredStatus, planned: Planned | null): Promise<{ warnings: string[]; planned: Planned | null }> {
    const { feedStates } = await import('../migrations/sync/handover.ts');
    if (!(await feedStates(ctx.config, service)).some((f) => f.from === 'legacy')) return { warnings: [], planned };
    const fenced = await fence(service, from, from, planned);
    const current = (await routeOf(service.prefix)) ?? { mode: 'service' as RouteMode, weight: 100, methods: null };
    const released = await release(service, from, fenced.planned, { mode: current.mode as RouteMode, weight: current.weight, methods: current.methods }, 'fence: release (copies moved)', 'applied');
    return { warnings: fenced.handover ? [...fenced.warnings, ...(await confirmCopies(fenced.handover))] : fenced.warnings, planned: planned && released };
  }

  /** Records a refused change (nothing else changes) and throws the refusal. */
  async function refuse(service: ResolvedService, entry: AuditEntry, checks: readonly CheckResult[], error: StranglerError): Promise<never> {
    await commitChange(writes, { service: service.name, prefix: service.prefix, expect: null, audit: { ...entry, outcome: 'refused' }, checks });
    throw error;
  }

  /** Every change but rollback: plan → checks → decide → (dry run: stop) → act → record. */
  async function change(prefix: string, command: Command, options: ChangeOptions = {}): Promise<ChangeOutcome> {
    const service = serviceForPrefix(ctx.config, prefix);
    const labelWith = (methods: MethodScope | undefined) => (command.kind === 'canary' ? `canary ${command.weight}${scopeLabel(methods)}` : `${command.kind}${command.kind === 'full' ? scopeLabel(methods) : ''}`);
    let label = labelWith(command.kind === 'canary' || command.kind === 'full' ? command.methods : undefined);
    if (!options.dryRun && !options.locked) await store.lock(service.prefix, holder, label, 60_000);
    try {
      const from = await store.status(service.name, service.prefix);
      const p = plan(from, command);
      // No scope given keeps the canary's (a promote step, --resume): the audit log names the scope that applies.
      if (p.ok && (command.kind === 'canary' || command.kind === 'full') && command.methods === undefined) label = labelWith(p.to.methods ?? null);
      if (!p.ok) {
        const error = new StranglerError(p.reason, 'CHECK_FAILED');
        if (options.dryRun) throw error;
        return await refuse(service, record(service, label, from.phase, null, { reason: options.reason ?? null, details: { why: p.reason } }), [], error);
      }
      const checks = await runChecks(probe(options.analysisWindowMs ?? 60_000, options.thresholds), service, p.checks);
      const decision = next(from, command, checks, { force: options.force });
      const unavailable = await actionProblems(ctx.config, p.actions, service);
      if (p.actions.some((a) => a.kind === 'set-route' && a.mode === 'shadow')) {
        const cannotShadow = shadowProblem(await liveGateways(ctx.redis, ctx.keys, liveWithinMs).catch(() => []));
        if (cannotShadow) unavailable.push(cannotShadow);
      }
      const outcome: ChangeOutcome = { prefix: service.prefix, service: service.name, command: label, from, to: p.to, checks, actions: p.actions, forced: false, dryRun: !!options.dryRun, warnings: [] };
      const refusal = 'refused' in decision ? decision.refused : null;
      if ((refusal || unavailable.length) && !options.force) {
        const why = [refusal, ...unavailable].filter(Boolean).join('; ');
        const error = new StranglerError(`refused: ${why}`, 'CHECK_FAILED', { checks, unavailable, dryRun: !!options.dryRun });
        if (options.dryRun) throw error;
        return await refuse(service, record(service, label, from.phase, p.to.phase, { reason: options.reason ?? null, details: { why } }), checks, error);
      }
      outcome.forced = !!options.force && (!!refusal || unavailable.length > 0);
      outcome.warnings = [...unavailable];
      if (options.force && !options.reason) throw new StranglerError('--force needs --reason "...": a forced change is recorded with why', 'BAD_INPUT');
      if (options.dryRun) return outcome;
      const applied = await applyTransition(service, from, p.to, p.actions, { command: label, reason: options.reason ?? null, forced: outcome.forced, checks, details: outcome.forced ? { forcedPast: [refusal, ...unavailable].filter(Boolean) } : undefined }, options.progress ?? null, from.planned);
      return { ...outcome, ...applied, warnings: [...outcome.warnings, ...(applied.warnings ?? [])] };
    } finally {
      if (!options.dryRun && !options.locked) await store.unlock(service.prefix, holder);
    }
  }

  /**
   * The one rollback path (rule 8), used by the command, by the progressive canary and by
   * anything automatic: no preflight, no lock wait; the route goes to legacy and is recorded
   * in one transaction, then every gateway is told.
   */
  async function rollback(prefix: string, reason: string, options: { dryRun?: boolean; automatic?: boolean } = {}): Promise<ChangeOutcome> {
    if (!reason?.trim()) throw new StranglerError('rollback needs --reason "...": it is recorded in the audit log', 'BAD_INPUT');
    const service = serviceForPrefix(ctx.config, prefix);
    const from = await store.status(service.name, service.prefix);
    const p = plan(from, { kind: 'rollback' });
    if (!p.ok) throw new StranglerError(p.reason, 'CHECK_FAILED');
    // A rollback always re-asserts the legacy route, even when the phase says it is there already.
    const actions: Action[] = p.actions.some((a) => a.kind === 'set-route') ? p.actions : [{ kind: 'set-route', ...routeFor(p.to) }, ...p.actions];
    const outcome: ChangeOutcome = { prefix: service.prefix, service: service.name, command: options.automatic ? 'rollback (automatic)' : 'rollback', from, to: p.to, checks: [], actions, forced: false, dryRun: !!options.dryRun, warnings: [] };
    if (writesReachService(from) && (await actionProblems(ctx.config, [{ kind: 'start-reverse-sync' }], service)).length) {
      outcome.warnings.push(`reverse sync of ${service.name} does not run: writes the service took may not be on legacy`);
    }
    if (options.dryRun) return outcome;
    const applied = await applyTransition(service, from, p.to, actions, { command: outcome.command, reason, forced: false, checks: [] }, null, null);
    return { ...outcome, ...applied, warnings: [...outcome.warnings, ...(applied.warnings ?? [])] };
  }

  /** The route of a prefix as the control database has it, with the global version. */
  async function routeOf(prefix: string): Promise<{ mode: string; weight: number; methods: MethodScope; version: number } | null> {
    const { rows } = await ctx.pool.query(
      `SELECT r.mode, r.weight::float8 AS weight, r.methods, v.version::int AS version FROM "${ctx.config.control.schema}".route_version v LEFT JOIN "${ctx.config.control.schema}".routes r ON r.prefix = $1`,
      [prefix],
    );
    if (!rows[0]) return null;
    return { mode: rows[0].mode ?? 'legacy', weight: rows[0].weight ?? 0, methods: rows[0].methods ?? null, version: rows[0].version };
  }

  return { config: ctx.config, actor: ctx.actor, store, change, rollback, probe, thresholds, holder, liveWithinMs, routeOf };
}

export type Cutover = ReturnType<typeof createCutover>;

/** Opens what a cutover command needs: the control DB pool and a Redis connection. */
export async function openCutover(config: ResolvedConfig, actor: string, extra: Partial<CutoverContext> = {}) {
  const { Redis } = await import('ioredis');
  const { redisKeys } = await import('../gateway/redis-keys.ts');
  // Deadlines on every call (DESIGN.md, Faults): a control database or a Redis that hangs fails
  // the command with a one-line reason instead of holding it, and a fence it set lapses by its lease.
  const pool = new pg.Pool({ connectionString: config.control.databaseUrl, max: 4, connectionTimeoutMillis: 5_000, query_timeout: Math.max(config.control.queryTimeoutMs, 10_000) });
  pool.on('error', () => undefined); // an idle connection dropped by a restarting server; the next query reconnects
  const redis = new Redis(config.redis.url, { maxRetriesPerRequest: 1, connectTimeout: 2_000, commandTimeout: 2_000, lazyConnect: false });
  redis.on('error', () => undefined);
  const cutover = createCutover({ config, pool, redis, keys: redisKeys(config.redis.keyPrefix), actor, ...extra });
  return {
    cutover,
    pool,
    redis,
    async close() {
      await pool.end();
      redis.disconnect();
    },
  };
}
