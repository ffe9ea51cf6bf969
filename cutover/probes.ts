import type { Redis } from 'ioredis';
import type { ResolvedConfig, ResolvedService } from '../core/config/load.ts';
import { PREFLIGHT_USER_AGENT, probeHealth } from '../core/health-check.ts';
import { createRedisRegistry } from '../core/registry/redis-registry.ts';
import { readRouteFigures, type WindowFigures } from '../gateway/metrics.ts';
import type { RedisKeys } from '../gateway/redis-keys.ts';
import { runDoctor } from '../migrations/sync/doctor.ts';
import { serviceIdRangesFromLegacy } from '../migrations/sync/id-ranges.ts';
import { syncStatus } from '../migrations/sync/status.ts';
import {
  checkCanaryAnalysis,
  checkDependsOn,
  checkGateways,
  checkIdRanges,
  checkServiceHealth,
  checkShadowMismatch,
  checkSyncLag,
  checkSyncVerified,
  fail,
  pass,
  type AvailabilityObservation,
  type CheckThresholds,
  type SideFigures,
  type SyncObservation,
} from './checks.ts';
import type { ControlStore } from './control-store.ts';
import { liveGateways } from './route-change.ts';
import type { CheckName, CheckResult } from './state-machine.ts';

export interface ProbeContext {
  config: ResolvedConfig;
  redis: Redis;
  keys: RedisKeys;
  store: ControlStore;
  thresholds: CheckThresholds;
  /** The canary analysis window (the progressive interval, or the last minute). */
  analysisWindowMs: number;
  liveWithinMs: number;
}

/** What the sync engine says about a service, as the checks read it (a stopped worker is not "streaming"). */
export async function observeSync(config: ResolvedConfig, service: ResolvedService, direction: 'forward' | 'reverse' = 'forward'): Promise<SyncObservation | null> {
  try {
    const s = await syncStatus(config, service, direction);
    if (s.state === 'not started') return null;
    const v = s.lastVerification;
    const summary = v?.summary as { tables?: Array<{ table: string; ok: boolean; firstMismatch?: { from: unknown; to: unknown } }> } | undefined;
    const bad = summary?.tables?.find((t) => !t.ok);
    return {
      state: s.active || s.state === 'schema-stopped' ? s.state : `${s.state === 'streaming' ? 'stopped' : s.state} (no worker holds the slot)`,
      lagBytes: s.lagBytes,
      lagSeconds: s.lagSeconds,
      lastError: s.lastError,
      lastVerify: v ? { ok: v.ok, at: new Date(v.at).toISOString(), detail: bad ? `${bad.table} differs` : undefined } : null,
      conflicts: s.conflicts,
      rowsApplied: s.rowsApplied,
    };
  } catch (err) {
    return { state: `unknown (${(err as Error).message})`, lagBytes: null, lagSeconds: null, lastError: (err as Error).message, lastVerify: null };
  }
}

/** The service's instances as the live gateways report them (null: no gateway reports it). */
export async function observeAvailability(config: ResolvedConfig, redis: Redis, keys: RedisKeys, service: ResolvedService): Promise<AvailabilityObservation | null> {
  const { readInstances } = await import('../gateway/instances-report.ts');
  const view = (await readInstances(config, redis, keys)).find((i) => i.service === service.name);
  if (!view || view.gateways.length === 0) return null;
  return { service: service.name, available: view.available, total: view.instances.filter((r) => r.registry !== 'gone').length };
}

/** A side's window figures as the checks read them: no latency without requests, past the last bucket as 100 s. */
export function sideFigures(f: WindowFigures): SideFigures {
  const ms = (v: number) => (f.requests ? (Number.isFinite(v) ? v : 100_000) : null);
  return { ...f, p99Ms: ms(f.p99Ms), p90Ms: ms(f.p90Ms) };
}

/** Shadowed requests compared (not skipped, not failed) from the gateways' counts. */
export function shadowCompared(counts: Record<string, string>): number {
  return ['match', 'noise', 'lagged', 'mismatch'].reduce((n, k) => n + Number(counts[k] ?? 0), 0);
}

/** Runs the named checks against the real components. A probe that cannot observe fails closed. */
export async function runChecks(ctx: ProbeContext, service: ResolvedService, names: readonly CheckName[]): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  let sync: SyncObservation | null | undefined;
  const syncObs = async () => (sync === undefined ? (sync = await observeSync(ctx.config, service)) : sync);
  for (const name of names) {
    try {
      results.push(await runCheck(ctx, service, name, syncObs));
    } catch (err) {
      results.push(fail(name, `the check could not run: ${(err as Error).message}`, true));
    }
  }
  return results;
}

async function runCheck(ctx: ProbeContext, service: ResolvedService, name: CheckName, syncObs: () => Promise<SyncObservation | null>): Promise<CheckResult> {
  switch (name) {
    case 'replication-ready': {
      const findings = await runDoctor({ ...ctx.config, services: [service] });
      const bad = findings.filter((f) => !f.ok);
      if (bad.length) return fail(name, `${bad.map((f) => `${f.check}: ${f.fix ?? f.detail}`).join('; ')} (see: strangler doctor)`, false);
      const s = await syncObs();
      if (!s || !s.state.startsWith('streaming')) return fail(name, `the legacy database is ready, but no sync streams for ${service.name}; run: strangler sync start ${service.name}`, true);
      return pass(name, 'legacy database ready; the forward sync streams');
    }
    case 'service-health': {
      // Every instance the gateways would use: the registry's, or url + instances from strangler.yaml.
      const urls =
        service.discovery === 'registry'
          ? (await createRedisRegistry({ redis: ctx.redis, keyPrefix: ctx.config.redis.keyPrefix }).list(service.name)).map((i) => i.url)
          : [service.url, ...service.instances];
      // The gateway's own health check (core/health-check.ts), with the service's settings.
      const observed = await Promise.all(urls.map(async (url) => ({ url, ...(await probeHealth(url, service.healthCheck, undefined, PREFLIGHT_USER_AGENT)) })));
      return checkServiceHealth(service.name, observed, service.healthCheck);
    }
    case 'sync-lag':
      return checkSyncLag(service.name, await syncObs(), ctx.thresholds);
    case 'sync-verified':
      return checkSyncVerified(service.name, await syncObs());
    case 'shadow-mismatch': {
      const h = await ctx.redis.hgetall(ctx.keys.shadowCounts(service.name));
      const mismatches = Number(h.mismatch ?? 0);
      // A difference that settled on a second ask was sync lag, one legacy also showed against
      // itself was noise: both compared, neither a mismatch.
      return checkShadowMismatch(service.prefix, shadowCompared(h), mismatches, ctx.thresholds);
    }
    case 'canary-analysis': {
      const to = Date.now();
      const from = to - ctx.analysisWindowMs;
      const [legacy, svc, instances] = await Promise.all([
        readRouteFigures(ctx.redis, ctx.keys, service.name, 'legacy', from, to),
        readRouteFigures(ctx.redis, ctx.keys, service.name, 'service', from, to),
        observeAvailability(ctx.config, ctx.redis, ctx.keys, service).catch(() => null),
      ]);
      return checkCanaryAnalysis(service.prefix, sideFigures(legacy), sideFigures(svc), ctx.thresholds, instances);
    }
    case 'bake-analysis':
      // Needs the baseline taken at the switch: run by cutover/bake.ts, never as a preflight.
      return fail(name, 'the bake analysis runs only after a switch, with its baseline: strangler cutover <prefix> --full --bake 5m', false);
    case 'depends-on-switched': {
      const deps = await Promise.all(
        service.dependsOn.map(async (dep) => {
          const s = ctx.config.services.find((x) => x.name === dep)!;
          return { name: dep, phase: (await ctx.store.status(s.name, s.prefix)).phase };
        }),
      );
      return checkDependsOn(service.name, deps);
    }
    case 'id-ranges':
      return checkIdRanges(service, service.readOnly ? [] : await serviceIdRangesFromLegacy(ctx.config, service));
    case 'gateways-reachable': {
      let up = false;
      try {
        up = (await ctx.redis.ping()) === 'PONG';
      } catch {
        up = false;
      }
      return checkGateways(up, up ? (await liveGateways(ctx.redis, ctx.keys, ctx.liveWithinMs)).length : 0);
    }
  }
}
