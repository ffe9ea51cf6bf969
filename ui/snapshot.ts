import type { Redis } from 'ioredis';
import type { ResolvedConfig } from '../core/config/load.ts';
import type { Cutover } from '../cutover/executor.ts';
import { overview, sideSummary, type PrefixOverview } from '../cutover/overview.ts';
import { liveGateways, type GatewayInstance } from '../cutover/route-change.ts';
import { readShadowReport, type ShadowReport } from '../cutover/shadow-report.ts';
import { readInstances, type ServiceInstances } from '../gateway/instances-report.ts';
import { readRouteSeries } from '../gateway/metrics.ts';
import type { RedisKeys } from '../gateway/redis-keys.ts';
import type { LagHistory, LagPoint } from './lag-history.ts';

/** What the dashboard shows at one moment; the page renders it as it is (ui/public/app.js). */
export interface DashboardSnapshot {
  at: string;
  /** Whether promote and rollback are possible here (an admin token is configured). */
  actions: boolean;
  /** Every prefix in roadmap order, as `strangler status` has it, with each live gateway's version. */
  prefixes: Array<PrefixOverview & { acks: Array<{ gateway: string; version: number; acknowledged: boolean }> }>;
  gateways: GatewayInstance[];
  /** Each sync pipeline that runs or ran, with its recent lag. */
  pipelines: Array<{ service: string; direction: 'forward' | 'reverse'; state: string; lagBytes: number | null; lagSeconds: number | null; rowsApplied: number; conflicts: number; history: LagPoint[] }>;
  /** Services whose gateways compared shadowed answers. */
  shadow: Array<{ service: string; prefix: string } & ShadowReport>;
  /** Per service with traffic in the window: service against legacy, interval by interval. */
  canary: Array<{ service: string; prefix: string; stepMs: number; intervals: Array<{ at: number; service: SideFigures; legacy: SideFigures }> }>;
  /** The analyses recorded by progressive canaries, bakes and preflights, newest first. */
  analyses: Array<{ id: number; at: string; service: string; name: string; ok: boolean; reason: string }>;
  instances: ServiceInstances[];
  /** The audit log, newest first. */
  history: Array<Record<string, unknown>>;
}

export type SideFigures = ReturnType<typeof sideSummary>;

export interface SnapshotDeps {
  config: ResolvedConfig;
  cutover: Cutover;
  redis: Redis;
  keys: RedisKeys;
  lag: LagHistory;
  actions: boolean;
  /** Canary charts: this many intervals of this length. */
  canaryStepMs?: number;
  canaryIntervals?: number;
}

/**
 * Reads everything the dashboard shows through the functions the CLI commands use (status,
 * services, diff, history, sync status), and records the pipelines' lag in the history.
 */
export async function readSnapshot(d: SnapshotDeps): Promise<DashboardSnapshot> {
  const now = Date.now();
  const [gateways, instances, history, analyses] = await Promise.all([
    liveGateways(d.redis, d.keys, d.cutover.liveWithinMs).catch(() => [] as GatewayInstance[]),
    readInstances(d.config, d.redis, d.keys).catch(() => [] as ServiceInstances[]),
    d.cutover.store.history(null, 60),
    d.cutover.store.analyses(40),
  ]);
  // The gateways and instances read once, for the routes' rows and the page's own sections.
  const rows = await overview(d.cutover, d.redis, d.keys, d.config, 60_000, { gateways, instances });
  const pipelines: DashboardSnapshot['pipelines'] = [];
  for (const r of rows) {
    const sides = [['forward', r.sync] as const, ...(r.reverse ? [['reverse', r.reverse] as const] : [])];
    for (const [direction, s] of sides) {
      if (s.state === 'not started') continue;
      const name = `${r.service} ${direction}`;
      d.lag.add(name, { t: now, lagBytes: s.lagBytes, lagSeconds: s.lagSeconds, rowsApplied: s.rowsApplied });
      pipelines.push({ service: r.service, direction, state: s.state, lagBytes: s.lagBytes, lagSeconds: s.lagSeconds, rowsApplied: s.rowsApplied, conflicts: s.conflicts, history: d.lag.get(name) });
    }
  }
  const shadow: DashboardSnapshot['shadow'] = [];
  const canary: DashboardSnapshot['canary'] = [];
  const stepMs = d.canaryStepMs ?? 10_000;
  const count = d.canaryIntervals ?? 30;
  for (const r of rows) {
    const report = await readShadowReport(d.redis, d.keys, r.service, 5).catch(() => null);
    if (report && (Object.keys(report.counts).length || report.samples.length)) shadow.push({ service: r.service, prefix: r.prefix, ...report, noisyPaths: report.noisyPaths.slice(0, 10) });
    const from = now - stepMs * count;
    const [svc, legacy] = await Promise.all([
      readRouteSeries(d.redis, d.keys, r.service, 'service', from, now, stepMs).catch(() => []),
      readRouteSeries(d.redis, d.keys, r.service, 'legacy', from, now, stepMs).catch(() => []),
    ]);
    if (!svc.some((i) => i.requests) && !(r.phase === 'canary' || r.phase === 'switched')) continue;
    canary.push({ service: r.service, prefix: r.prefix, stepMs, intervals: svc.map((s, i) => ({ at: s.at, service: sideSummary(s), legacy: sideSummary(legacy[i] ?? { requests: 0, errorRate: 0, p99Ms: 0 }) })) });
  }
  return {
    at: new Date(now).toISOString(),
    actions: d.actions,
    prefixes: rows.map((r) => ({ ...r, acks: gateways.map((g) => ({ gateway: g.id, version: g.version, acknowledged: g.version >= r.gateways.version })) })),
    gateways,
    pipelines,
    shadow,
    canary,
    analyses: analyses.map((a) => ({ id: a.id, at: new Date(a.at).toISOString(), service: a.service, name: a.name, ok: a.ok, reason: a.reason })),
    instances,
    history: history.map((h) => ({ ...h, at: new Date(h.at).toISOString() })),
  };
}
