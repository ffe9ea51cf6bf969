import type { ResolvedConfig } from '../core/config/load.ts';
import type { ServiceInstances } from '../gateway/instances-report.ts';
import { readRouteFigures } from '../gateway/metrics.ts';
import { observeSync, shadowCompared } from './probes.ts';
import { liveGateways, type GatewayInstance } from './route-change.ts';
import type { Cutover } from './executor.ts';
import { legalCommands, plan, scopeLabel, type Phase } from './state-machine.ts';

export interface PrefixOverview {
  prefix: string;
  service: string;
  order: number;
  phase: Phase;
  mode: string;
  weight: number;
  /** The route's method scope (null: all methods). */
  methods: readonly string[] | null;
  gateways: { acknowledged: number; live: number; version: number };
  /** Instances the gateways may send to now, of those known (registry or strangler.yaml); null without a gateway reporting. */
  instances: { available: number; total: number } | null;
  sync: { state: string; lagBytes: number | null; lagSeconds: number | null; lastVerify: string | null; rowsApplied: number; conflicts: number };
  reverse: { state: string; lagBytes: number | null; lagSeconds: number | null; conflicts: number; rowsApplied: number } | null;
  shadow: { compared: number; lagged: number; noise: number; mismatchPercent: number | null };
  canary: { window: string; service: { requests: number; errorPercent: number | null; p99Ms: number | null }; legacy: { requests: number; errorPercent: number | null; p99Ms: number | null } };
  /** The bake after the switch: under way (its time left), or interrupted (its command stopped before the end). */
  bake: { state: 'baking' | 'interrupted'; remainingMs: number; failures: number; threshold: number } | null;
  next: { command: string; checks: readonly string[] } | { refused: string };
  legal: string[];
}

/** Pure: one side's window figures as status and the dashboard show them (percent; none without requests). */
export function sideSummary(f: { requests: number; errorRate: number; p99Ms: number }): { requests: number; errorPercent: number | null; p99Ms: number | null } {
  return { requests: f.requests, errorPercent: f.requests ? Math.round(f.errorRate * 10_000) / 100 : null, p99Ms: f.requests ? (Number.isFinite(f.p99Ms) ? f.p99Ms : null) : null };
}

/**
 * Everything `strangler status` and `plan` show, per prefix, in the migration order. `seen`: the
 * live gateways and instances when the caller read them already (the dashboard shows them too).
 */
export async function overview(
  cutover: Cutover,
  redis: import('ioredis').Redis,
  keys: import('../gateway/redis-keys.ts').RedisKeys,
  config: ResolvedConfig,
  windowMs = 60_000,
  seen?: { gateways: GatewayInstance[]; instances: ServiceInstances[] },
): Promise<PrefixOverview[]> {
  const gateways = seen?.gateways ?? (await liveGateways(redis, keys, cutover.liveWithinMs).catch(() => []));
  const instances = seen?.instances ?? (await (await import('../gateway/instances-report.ts')).readInstances(config, redis, keys).catch(() => []));
  const out: PrefixOverview[] = [];
  for (const service of config.services) {
    const status = await cutover.store.status(service.name, service.prefix);
    const routes = await cutover.routeOf(service.prefix);
    const version = routes?.version ?? 0;
    const sync = await observeSync(config, service);
    const writes = !service.readOnly && service.tables.some((t) => !t.replica);
    const reverse = writes ? await observeSync(config, service, 'reverse') : null;
    const counts = await redis.hgetall(keys.shadowCounts(service.name)).catch(() => ({}) as Record<string, string>);
    const compared = shadowCompared(counts);
    const to = Date.now();
    const [legacy, svc] = await Promise.all([
      readRouteFigures(redis, keys, service.name, 'legacy', to - windowMs, to).catch(() => ({ requests: 0, errors: 0, errorRate: 0, p99Ms: 0 })),
      readRouteFigures(redis, keys, service.name, 'service', to - windowMs, to).catch(() => ({ requests: 0, errors: 0, errorRate: 0, p99Ms: 0 })),
    ]);
    const p = plan(status, { kind: 'promote' });
    const remainingMs = status.bake ? Math.max(0, new Date(status.bake.until).getTime() - Date.now()) : 0;
    const watched = status.bake && remainingMs > 0 && (await cutover.store.lockHolder(service.prefix)) === status.bake.holder;
    out.push({
      prefix: service.prefix,
      service: service.name,
      order: service.order,
      phase: status.phase,
      mode: routes?.mode ?? 'legacy',
      weight: routes?.weight ?? 0,
      methods: routes?.methods ?? null,
      gateways: { acknowledged: gateways.filter((g) => g.version >= version).length, live: gateways.length, version },
      instances: ((i) => (i && i.gateways.length ? { available: i.available, total: i.instances.filter((r) => r.registry !== 'gone').length } : null))(instances.find((i) => i.service === service.name)),
      sync: { state: sync?.state ?? 'not started', lagBytes: sync?.lagBytes ?? null, lagSeconds: sync?.lagSeconds ?? null, lastVerify: sync?.lastVerify ? `${sync.lastVerify.ok ? 'passed' : 'FAILED'} ${sync.lastVerify.at}` : null, rowsApplied: sync?.rowsApplied ?? 0, conflicts: sync?.conflicts ?? 0 },
      reverse: writes ? { state: reverse?.state ?? 'not started', lagBytes: reverse?.lagBytes ?? null, lagSeconds: reverse?.lagSeconds ?? null, rowsApplied: reverse?.rowsApplied ?? 0, conflicts: (reverse?.conflicts ?? 0) + (sync?.conflicts ?? 0) } : null,
      shadow: { compared, lagged: Number(counts.lagged ?? 0), noise: Number(counts.noise ?? 0), mismatchPercent: compared ? Math.round((10_000 * Number(counts.mismatch ?? 0)) / compared) / 100 : null },
      canary: { window: `${windowMs / 1000}s`, service: sideSummary(svc), legacy: sideSummary(legacy) },
      bake: status.bake ? { state: watched ? 'baking' : 'interrupted', remainingMs, failures: status.bake.failures, threshold: status.bake.threshold } : null,
      next: p.ok ? { command: p.command.kind === 'canary' ? `canary ${p.command.weight}${scopeLabel(p.command.methods)}` : p.command.kind, checks: p.checks } : { refused: p.reason },
      legal: legalCommands(status.phase),
    });
  }
  return out;
}
