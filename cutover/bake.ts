import { serviceForPrefix } from '../core/config/load.ts';
import { StranglerError } from '../core/errors.ts';
import { readRouteFigures } from '../gateway/metrics.ts';
import { checkBakeAnalysis } from './checks.ts';
import type { Bake } from './control-store.ts';
import type { ChangeOutcome, Cutover } from './executor.ts';
import { observeAvailability, sideFigures } from './probes.ts';
import type { CheckResult } from './state-machine.ts';

export interface BakeOptions {
  durationMs: number;
  /** Traffic analysed per analysis. */
  intervalMs: number;
  /** Failed analyses in a row before the automatic rollback (no available instance counts like any failure). */
  threshold: number;
  maxErrorRate?: number;
  maxP99Ms?: number;
}

export type BakeEvent =
  | { kind: 'baking'; remainingMs: number }
  | { kind: 'analysis'; result: CheckResult; failures: number; threshold: number; remainingMs: number }
  | { kind: 'rolled-back'; reason: string; outcome: ChangeOutcome }
  | { kind: 'baked'; analyses: number };

/** Legacy's figures before the switch are read over at least this long (legacy takes no traffic on the prefix after it). */
const BASELINE_MS = 5 * 60_000;

/**
 * The bake after a switch: Argo Rollouts and Flagger stop analysing at promotion; a service
 * that dies a moment after its last canary analysis would then answer 503s until someone acts.
 * For `durationMs` after the switch the prefix is analysed every interval (the service's errors,
 * fallbacks, no-instance and ejected requests against legacy's figures over the minutes before
 * the switch; its available instances), and after `threshold` failed analyses in a row it is
 * rolled back through the one rollback path (fence, drain of the reverse sync, route to legacy),
 * so no write the service acknowledged is lost. The prefix lock is held and the bake recorded
 * with the phase (for `status`) throughout; a rollback by anyone else ends it.
 */
export async function runBake(cutover: Cutover, prefix: string, o: BakeOptions, onEvent: (e: BakeEvent) => void, sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))): Promise<{ analyses: number }> {
  if (!(o.durationMs > 0)) throw new StranglerError(`--bake must be a positive duration, e.g. 5m; got ${o.durationMs} ms`, 'BAD_INPUT');
  if (!Number.isInteger(o.threshold) || o.threshold < 1) throw new StranglerError(`--threshold must be a whole number ≥ 1, got ${o.threshold}`, 'BAD_INPUT');
  const service = serviceForPrefix(cutover.config, prefix);
  const { store, holder } = cutover;
  const status = await store.status(service.name, service.prefix);
  if (status.phase !== 'switched') throw new StranglerError(`${service.prefix} is in phase "${status.phase}"; a bake follows a switch: strangler cutover ${service.prefix} --full --bake 5m`, 'CHECK_FAILED');
  const lease = o.intervalMs * 2 + 30_000;
  await store.lock(service.prefix, holder, 'bake', lease);
  const { redis, keys, thresholds } = cutover.probe(o.intervalMs);
  const t = { ...thresholds, ...(o.maxErrorRate !== undefined ? { maxErrorRatePercent: o.maxErrorRate } : {}), ...(o.maxP99Ms !== undefined ? { maxP99Ms: o.maxP99Ms } : {}) };
  try {
    const switchedAt = status.phaseSince ? new Date(status.phaseSince).getTime() : Date.now();
    const before = await readRouteFigures(redis, keys, service.name, 'legacy', switchedAt - Math.max(BASELINE_MS, o.intervalMs), switchedAt);
    const baseline = sideFigures(before);
    const started = Date.now();
    let bake: Bake = {
      startedAt: new Date(started).toISOString(),
      until: new Date(started + o.durationMs).toISOString(),
      intervalMs: o.intervalMs,
      threshold: o.threshold,
      failures: 0,
      baseline: { requests: baseline.requests, errors: baseline.errors, p99Ms: baseline.p99Ms, p90Ms: baseline.p90Ms ?? null },
      holder,
    };
    await store.writeBake(service.name, bake);
    const end = started + o.durationMs;
    let analyses = 0;
    while (Date.now() < end) {
      // One interval (the last may be shorter), ended early by a request that found no instance.
      const from = Date.now();
      const until = Math.min(end, from + o.intervalMs);
      while (Date.now() < until) {
        await sleep(Math.min(1_000, until - Date.now()));
        await store.renew(service.prefix, holder, lease);
        const now = await store.status(service.name, service.prefix);
        if (now.phase !== 'switched') throw new StranglerError(`${service.prefix} left the switched phase (now "${now.phase}") during its bake; stopped`, 'CHECK_FAILED');
        onEvent({ kind: 'baking', remainingMs: Math.max(0, end - Date.now()) });
        if ((await readRouteFigures(redis, keys, service.name, 'service', from, Date.now()).catch(() => null))?.noinstance) break;
      }
      const [svc, instances] = await Promise.all([readRouteFigures(redis, keys, service.name, 'service', from, Date.now()), observeAvailability(cutover.config, redis, keys, service).catch(() => null)]);
      const result = checkBakeAnalysis(service.prefix, baseline, sideFigures(svc), t, instances);
      analyses++;
      await store.recordAnalysis(service.name, [result]).catch(() => undefined);
      bake = { ...bake, failures: result.ok ? 0 : bake.failures + 1 };
      await store.writeBake(service.name, bake);
      onEvent({ kind: 'analysis', result, failures: bake.failures, threshold: o.threshold, remainingMs: Math.max(0, end - Date.now()) });
      if (bake.failures >= o.threshold || (!result.ok && !result.retriable)) {
        const reason = `automatic rollback during the bake after ${bake.failures} failed analyses: ${result.reason}`;
        const outcome = await cutover.rollback(service.prefix, reason, { automatic: true });
        onEvent({ kind: 'rolled-back', reason, outcome });
        throw new StranglerError(reason, 'CHECK_FAILED', { rolledBack: true });
      }
    }
    await store.writeBake(service.name, null);
    await store.audit({ actor: cutover.actor, command: 'bake', service: service.name, prefix: service.prefix, fromPhase: 'switched', toPhase: 'switched', reason: null, forced: false, outcome: 'passed', details: { durationMs: o.durationMs, analyses } });
    onEvent({ kind: 'baked', analyses });
    return { analyses };
  } finally {
    await store.unlock(service.prefix, holder).catch(() => undefined);
  }
}
