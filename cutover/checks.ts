import type { IdRangeFinding } from '../migrations/sync/id-ranges.ts';
import { healthCheckUrl, type HealthObservation, type ResolvedHealthCheck } from '../core/health-check.ts';
import type { CheckName, CheckResult, Phase } from './state-machine.ts';


/**
 * Preflight checks. Each is a pure evaluation of observations gathered by a probe, returning
 * `{ ok, retriable, reason }` (STYLE rule 9): not retriable → stop or roll back; retriable →
 * count against a threshold. Probes that cannot observe (a component not running, a feature
 * not built) fail closed: they never pass by default.
 */

export interface CheckThresholds {
  maxLagBytes: number;
  maxLagSeconds: number;
  /** Shadow mismatches as a share of compared requests, in percent. */
  maxShadowMismatchPercent: number;
  /** Fewest shadow comparisons before the mismatch rate means anything. */
  minShadowSamples: number;
  /** Canary: service error rate may exceed legacy's by at most this many points. */
  maxErrorRateMarginPercent: number;
  /** Canary: service p99 may exceed legacy's by at most this factor... */
  maxP99Ratio: number;
  /** ...unless the difference is under this many ms (latency buckets are coarse; noise is not a regression). */
  minP99DeltaMs: number;
  /**
   * Fewest requests on each side for their p99s to be compared: with fewer, a p99 is just the
   * slowest request, and the analysis compares p90s with the same ratio instead.
   */
  minP99Samples: number;
  /** Canary: absolute limits (from --max-error-rate / --max-p99-ms). */
  maxErrorRatePercent?: number;
  maxP99Ms?: number;
  /** Fewest service requests before a canary analysis means anything. */
  minCanaryRequests: number;
}

export const DEFAULT_THRESHOLDS: CheckThresholds = {
  maxLagBytes: 16 * 1024 * 1024,
  maxLagSeconds: 5,
  maxShadowMismatchPercent: 1,
  minShadowSamples: 20,
  maxErrorRateMarginPercent: 1,
  maxP99Ratio: 1.5,
  minP99DeltaMs: 100,
  minP99Samples: 100,
  minCanaryRequests: 20,
};

export const pass = (name: CheckName, reason: string): CheckResult => ({ name, ok: true, retriable: false, reason });
export const fail = (name: CheckName, reason: string, retriable: boolean): CheckResult => ({ name, ok: false, retriable, reason });

/**
 * Passes when at least one instance answers its health check as configured (the same settings
 * and request the gateway uses: core/health-check.ts); says how many of them do. With the checks
 * off (healthCheck.enabled: false) instances are not asked, only needed.
 */
export function checkServiceHealth(service: string, instances: Array<HealthObservation & { url: string }>, hc: Pick<ResolvedHealthCheck, 'enabled' | 'path' | 'expect'>): CheckResult {
  if (instances.length === 0) return fail('service-health', `no instance of ${service} is registered; start one (it registers itself with the registry, or list it under services[].url)`, true);
  if (!hc.enabled) return pass('service-health', `${instances.length} instance${instances.length === 1 ? '' : 's'} of ${service}, not asked: its health checks are off (healthCheck.enabled: false)`);
  const at = (url: string) => healthCheckUrl(url, hc);
  const healthy = instances.filter((h) => h.ok);
  const why = (h: HealthObservation & { url: string }) => `${at(h.url)}: ${h.error ?? `status ${h.status}, expected ${hc.expect}`}`;
  if (healthy.length === 0) return fail('service-health', `${service} did not answer ${instances.map(why).join('; ')}; start it or set its healthCheck (path, expect) in strangler.yaml`, true);
  if (instances.length === 1) return pass('service-health', `${service} answered ${at(instances[0].url)} in ${instances[0].latencyMs ?? '?'} ms`);
  const sick = instances.filter((h) => !h.ok);
  return pass('service-health', `${healthy.length}/${instances.length} instances of ${service} answered ${hc.path}${sick.length ? ` (not: ${sick.map(why).join('; ')})` : ''}`);
}

/** What the sync engine reports for a service; null when no sync engine answers for it. */
export interface SyncObservation {
  state: string;
  lagBytes: number | null;
  lagSeconds: number | null;
  lastError: string | null;
  lastVerify: { ok: boolean; at: string; detail?: string } | null;
  conflicts?: number;
  /** Rows the pipeline applied since it started (backfill and stream). */
  rowsApplied?: number;
}

export function checkSyncLag(service: string, s: SyncObservation | null, t: CheckThresholds): CheckResult {
  if (!s) return fail('sync-lag', `no sync runs for ${service}; start it: strangler sync start ${service}`, false);
  // Stopped at a schema change: the service database is stale from that point on; the reason says the fix.
  if (s.state.startsWith('schema-stopped')) return fail('sync-lag', `the sync of ${service} is stopped at a schema change: ${s.lastError ?? 'see strangler sync status'}`, false);
  if (s.state !== 'active' && s.state !== 'streaming') {
    return fail('sync-lag', `the sync of ${service} is ${s.state}${s.lastError ? ` (last error: ${s.lastError})` : ''}; start it: strangler sync start ${service}`, false);
  }
  if (s.lagBytes === null || s.lagSeconds === null) return fail('sync-lag', `the lag of ${service}'s sync is not known yet; wait for its first heartbeat`, true);
  if (s.lagBytes > t.maxLagBytes) return fail('sync-lag', `sync lag ${s.lagBytes} bytes > ${t.maxLagBytes}; wait for it to catch up (strangler sync status ${service})`, true);
  if (s.lagSeconds > t.maxLagSeconds) return fail('sync-lag', `sync lag ${s.lagSeconds.toFixed(1)} s > ${t.maxLagSeconds} s; wait for it to catch up (strangler sync status ${service})`, true);
  return pass('sync-lag', `lag ${s.lagBytes} bytes, ${s.lagSeconds.toFixed(1)} s`);
}

export function checkSyncVerified(service: string, s: SyncObservation | null): CheckResult {
  if (!s) return fail('sync-verified', `no sync runs for ${service}, so nothing was verified; run: strangler sync start ${service}`, false);
  if (!s.lastVerify) return fail('sync-verified', `${service} was never verified; run: strangler sync verify ${service}`, false);
  if (!s.lastVerify.ok) return fail('sync-verified', `the last verify of ${service} (${s.lastVerify.at}) failed${s.lastVerify.detail ? `: ${s.lastVerify.detail}` : ''}; fix the sync and run: strangler sync verify ${service}`, false);
  return pass('sync-verified', `verified at ${s.lastVerify.at}`);
}

export function checkShadowMismatch(prefix: string, compared: number, mismatches: number, t: CheckThresholds): CheckResult {
  if (compared < t.minShadowSamples) {
    return fail('shadow-mismatch', `only ${compared} shadowed requests compared on ${prefix} (need ${t.minShadowSamples}); let shadow run longer`, true);
  }
  const rate = (100 * mismatches) / compared;
  if (rate > t.maxShadowMismatchPercent) {
    return fail('shadow-mismatch', `${rate.toFixed(2)}% of shadowed answers differ on ${prefix} (max ${t.maxShadowMismatchPercent}%); see: strangler diff ${prefix}`, false);
  }
  return pass('shadow-mismatch', `${mismatches}/${compared} differ (${rate.toFixed(2)}%)`);
}

export interface SideFigures {
  requests: number;
  errors: number;
  p99Ms: number | null;
  /** Compared instead of p99 while a side has fewer than minP99Samples requests. */
  p90Ms?: number | null;
  /** Service side: requests it was given but that legacy served (it could not be reached). */
  fallback?: number;
  /** Service side: requests it was given while it had no available instance (served by legacy, or refused). */
  noinstance?: number;
  /** Service side: requests answered only after an instance they tried was ejected. */
  ejected?: number;
}

/** What the gateways see of the service's instances now (null: no gateway reports). */
export interface AvailabilityObservation {
  service: string;
  available: number;
  total: number;
}

const count = (n: number) => n.toLocaleString('en-US');

/**
 * The requests the service failed without answering a 5xx: the gateway sent them to legacy or
 * refused them (fell back, no instance), or they met an ejected instance. Each is a service
 * failure; the first two were never counted as service requests, so they are added to them.
 */
export function serviceFailures(f: SideFigures): { attempted: number; failed: number; detail: string } {
  const fallback = f.fallback ?? 0;
  const noinstance = f.noinstance ?? 0;
  const ejected = f.ejected ?? 0;
  const parts = [fallback && `${count(fallback)} fell back to legacy`, noinstance && `${count(noinstance)} found no available instance`, ejected && `${count(ejected)} met an ejected instance`].filter(Boolean);
  return { attempted: f.requests + fallback + noinstance, failed: f.errors + fallback + noinstance + ejected, detail: parts.length ? ` (${count(f.errors)} 5xx, ${parts.join(', ')})` : '' };
}

/**
 * The service had no instance to send to: it fails the analysis at once, whatever the rest of
 * the figures say, with what happened rather than a lack of traffic. null when it had one.
 */
export function checkAvailability(name: CheckName, prefix: string, service: SideFigures, instances: AvailabilityObservation | null, what: 'canary' | 'switched'): CheckResult | null {
  const noinstance = service.noinstance ?? 0;
  const down = instances !== null && instances.total > 0 && instances.available === 0;
  if (!down && noinstance === 0) return null;
  const now = instances ? `${instances.service} has ${instances.available} available instance${instances.available === 1 ? '' : 's'} (of ${instances.total})` : `the service of ${prefix} had no available instance`;
  const missed = noinstance + (service.fallback ?? 0);
  // Two moments, said as such: the instances now, and what the interval's requests met (an
  // instance back since does not undo the requests that found none).
  const then =
    what === 'canary'
      ? `in the interval ${count(missed)} canary requests fell back to legacy`
      : `in the interval ${count(missed)} requests on ${prefix} could not be served by it (${count(noinstance)} found no instance, ${count(service.fallback ?? 0)} fell back to legacy)`;
  return fail(name, `${now}${instances ? ' now' : ''}; ${then}; see: strangler services`, true);
}

/** Canary analysis, as Flagger does it: the service against legacy over the same interval. */
export function checkCanaryAnalysis(prefix: string, legacy: SideFigures, service: SideFigures, t: CheckThresholds, instances: AvailabilityObservation | null = null): CheckResult {
  const unavailable = checkAvailability('canary-analysis', prefix, service, instances, 'canary');
  if (unavailable) return unavailable;
  const { attempted, failed, detail } = serviceFailures(service);
  if (attempted < t.minCanaryRequests) {
    return fail('canary-analysis', `only ${attempted} requests reached the service on ${prefix} in the interval (need ${t.minCanaryRequests})`, true);
  }
  const svcRate = (100 * failed) / attempted;
  const legRate = legacy.requests ? (100 * legacy.errors) / legacy.requests : 0;
  const problems: string[] = [];
  if (t.maxErrorRatePercent !== undefined && svcRate > t.maxErrorRatePercent) problems.push(`service error rate ${svcRate.toFixed(2)}% > max ${t.maxErrorRatePercent}%`);
  if (svcRate > legRate + t.maxErrorRateMarginPercent) problems.push(`service error rate ${svcRate.toFixed(2)}% > legacy ${legRate.toFixed(2)}% + ${t.maxErrorRateMarginPercent} points`);
  if (service.p99Ms !== null && t.maxP99Ms !== undefined && service.p99Ms > t.maxP99Ms) problems.push(`service p99 ${service.p99Ms} ms > max ${t.maxP99Ms} ms`);
  // The service against legacy at the highest percentile both samples support.
  const enough = Math.min(service.requests, legacy.requests) >= t.minP99Samples;
  const [which, svcMs, legMs] = enough ? ['p99', service.p99Ms, legacy.p99Ms] : ['p90', service.p90Ms ?? null, legacy.p90Ms ?? null];
  if (svcMs !== null && legMs !== null && legMs > 0 && svcMs > legMs * t.maxP99Ratio && svcMs - legMs >= t.minP99DeltaMs) {
    problems.push(`service ${which} ${svcMs} ms > ${t.maxP99Ratio}× legacy's ${legMs} ms${enough ? '' : ` (p90: fewer than ${t.minP99Samples} requests on a side)`}`);
  }
  const latency = (f: SideFigures) => (enough || f.p90Ms === undefined ? `p99 ${f.p99Ms ?? '?'} ms` : `p90 ${f.p90Ms ?? '?'} ms, p99 ${f.p99Ms ?? '?'} ms`);
  const figures = `service ${count(attempted)} req, ${svcRate.toFixed(2)}% errors${detail}, ${latency(service)}; legacy ${legacy.requests} req, ${legRate.toFixed(2)}% errors, ${latency(legacy)}`;
  // A failed analysis is retriable: the progressive canary counts it against --threshold.
  return problems.length ? fail('canary-analysis', `${problems.join('; ')} (${figures})`, true) : pass('canary-analysis', figures);
}

/**
 * One analysis of a bake: the switched prefix's service figures over the interval against
 * legacy's over the minutes before the switch (legacy takes no traffic there any more), by the
 * canary analysis' rules; no available instance fails it at once. Too little traffic to judge
 * passes: a bake watches for harm, it does not demand load.
 */
export function checkBakeAnalysis(prefix: string, baseline: SideFigures, service: SideFigures, t: CheckThresholds, instances: AvailabilityObservation | null): CheckResult {
  const unavailable = checkAvailability('bake-analysis', prefix, service, instances, 'switched');
  if (unavailable) return unavailable;
  const { attempted } = serviceFailures(service);
  if (attempted < t.minCanaryRequests) return pass('bake-analysis', `${attempted} requests on ${prefix} in the interval (fewer than ${t.minCanaryRequests} to judge); ${instances ? `${instances.available}/${instances.total} instances available` : 'no gateway reports instances'}`);
  const r = checkCanaryAnalysis(prefix, baseline, service, t, instances);
  return { ...r, name: 'bake-analysis', reason: r.reason.replace(/; legacy /, "; legacy's baseline before the switch ") };
}

export function checkDependsOn(service: string, deps: ReadonlyArray<{ name: string; phase: Phase }>): CheckResult {
  const notYet = deps.filter((d) => d.phase !== 'switched' && d.phase !== 'finalized');
  if (notYet.length) {
    return fail('depends-on-switched', `${service} depends on ${notYet.map((d) => `${d.name} (${d.phase})`).join(', ')}, which must be switched first`, false);
  }
  return pass('depends-on-switched', deps.length ? `${deps.map((d) => d.name).join(', ')} switched` : 'no dependencies');
}

export function checkGateways(redisUp: boolean, live: number): CheckResult {
  if (!redisUp) return fail('gateways-reachable', 'Redis is unreachable, so gateways cannot be notified; fix Redis first', true);
  if (live === 0) return fail('gateways-reachable', 'no live gateway (no heartbeat in the last seconds); start one: strangler gateway', true);
  return pass('gateways-reachable', `Redis up, ${live} live gateway(s)`);
}

/**
 * Before the service takes writes (canary, switch): every generated key of its tables comes from
 * a range the monolith's ids cannot reach (migrations/sync/id-ranges.ts, as sync start and doctor
 * check it), else a row created on each side could get the same id and the reverse sync would
 * stop on it. `findings` null: the service database does not exist.
 */
export function checkIdRanges(service: { name: string; readOnly: boolean }, findings: ReadonlyArray<IdRangeFinding> | null): CheckResult {
  if (service.readOnly) return pass('id-ranges', `${service.name} is read-only: it creates no ids`);
  if (findings === null) return fail('id-ranges', `the database of ${service.name} does not exist; create it and its tables: strangler sync start ${service.name}`, false);
  const bad = findings.filter((f) => !f.ok);
  if (bad.length) {
    const fixes = bad.flatMap((f) => f.fix);
    return fail(
      'id-ranges',
      `the ids ${service.name} creates could collide with the monolith's: ${bad.map((f) => f.detail).join('; ')}${fixes.length ? `; run on ${service.name}'s database: ${fixes.join(' ')} (or: strangler sync start ${service.name} --fix-sequences)` : ''}`,
      false,
    );
  }
  return pass('id-ranges', findings.length ? `${findings.map((f) => f.table).join(', ')}: ids from the service's own range` : `${service.name} has no table with a generated key`);
}
