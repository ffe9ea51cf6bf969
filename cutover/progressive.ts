import { serviceForPrefix } from '../core/config/load.ts';
import { StranglerError } from '../core/errors.ts';
import type { Progress } from './control-store.ts';
import type { CheckThresholds } from './checks.ts';
import type { ChangeOutcome, Cutover } from './executor.ts';
import { runChecks } from './probes.ts';
import { readRouteFigures } from '../gateway/metrics.ts';
import type { CheckResult, MethodScope } from './state-machine.ts';

export interface ProgressiveOptions {
  steps: number[];
  intervalMs: number;
  threshold: number;
  maxErrorRate?: number;
  maxP99Ms?: number;
  resume?: boolean;
  /** The methods every step moves (--methods); absent: the canary's current scope, else all methods. */
  methods?: MethodScope;
  reason?: string | null;
  force?: boolean;
}

export type ProgressEvent =
  | { kind: 'step'; weight: number; outcome: ChangeOutcome }
  | { kind: 'analysis'; weight: number; result: CheckResult; failures: number; threshold: number }
  | { kind: 'waiting'; weight: number; remainingMs: number }
  | { kind: 'rolled-back'; reason: string; outcome: ChangeOutcome }
  | { kind: 'done'; outcome: ChangeOutcome };

/** Pure: validates the steps of a progressive canary (rising, 1-100, ending at 100). */
export function validateSteps(steps: number[]): string | null {
  if (steps.length === 0) return '--steps needs at least one weight, e.g. 5,25,50,100';
  if (steps.some((w) => !Number.isInteger(w) || w < 1 || w > 100)) return `--steps must be whole numbers from 1 to 100, got ${steps.join(',')}`;
  if (steps.some((w, i) => i > 0 && w <= steps[i - 1])) return `--steps must rise, got ${steps.join(',')}`;
  if (steps[steps.length - 1] !== 100) return `--steps must end at 100 (the switch), got ${steps.join(',')}`;
  return null;
}

/**
 * A progressive canary as Flagger and Argo Rollouts run one: set a weight, let an interval of
 * traffic pass, analyse it (service against legacy, from the gateways' figures), then go to the
 * next weight; after `threshold` failed analyses in a row, roll back through the one rollback
 * path. The progress is stored with the phase, so a killed run leaves the route at its last
 * weight and `--resume` continues from there. The prefix lock is held (and renewed) throughout.
 */
export async function runProgressive(
  cutover: Cutover,
  prefix: string,
  o: ProgressiveOptions,
  onEvent: (e: ProgressEvent) => void,
  sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms)),
): Promise<ChangeOutcome> {
  const bad = validateSteps(o.steps);
  if (bad) throw new StranglerError(bad, 'BAD_INPUT');
  if (!Number.isInteger(o.threshold) || o.threshold < 1) throw new StranglerError(`--threshold must be a whole number ≥ 1, got ${o.threshold}`, 'BAD_INPUT');
  const service = serviceForPrefix(cutover.config, prefix);
  const { store, holder } = cutover;
  const lease = o.intervalMs * 2 + 30_000;
  await store.lock(service.prefix, holder, 'progressive canary', lease);
  // This run's limits go with each of its checks; the shared defaults stay as they are.
  const limits = (p?: Progress): Partial<CheckThresholds> => {
    const maxErrorRatePercent = o.maxErrorRate ?? p?.maxErrorRate;
    const maxP99Ms = o.maxP99Ms ?? p?.maxP99Ms;
    return { ...(maxErrorRatePercent !== undefined ? { maxErrorRatePercent } : {}), ...(maxP99Ms !== undefined ? { maxP99Ms } : {}) };
  };
  try {
    const status = await store.status(service.name, service.prefix);
    let progress: Progress;
    if (o.resume) {
      if (!status.progress || status.phase !== 'canary') {
        throw new StranglerError(`nothing to resume on ${service.prefix}: it is in phase "${status.phase}" with no progressive canary under way`, 'CHECK_FAILED');
      }
      progress = status.progress;
    } else {
      progress = { steps: o.steps, index: 0, failures: 0, intervalMs: o.intervalMs, threshold: o.threshold, maxErrorRate: o.maxErrorRate, maxP99Ms: o.maxP99Ms, startedAt: new Date().toISOString() };
      const first = await cutover.change(service.prefix, progress.steps[0] >= 100 ? { kind: 'full', methods: o.methods } : { kind: 'canary', weight: progress.steps[0], methods: o.methods }, { reason: o.reason, force: o.force, progress, locked: true, analysisWindowMs: o.intervalMs, thresholds: limits() });
      onEvent({ kind: 'step', weight: progress.steps[0], outcome: first });
      if (progress.steps[0] >= 100) return first;
    }
    for (;;) {
      const weight = progress.steps[progress.index];
      // Let one interval of traffic pass at this weight, renewing the lease, watching for a rollback
      // by someone else, and for canary users the service had no instance for: that ends the
      // interval at once (the analysis fails with what happened).
      const started = Date.now();
      const until = started + progress.intervalMs;
      const { redis, keys } = cutover.probe(0);
      while (Date.now() < until) {
        await sleep(Math.min(1_000, until - Date.now()));
        await store.renew(service.prefix, holder, lease);
        const now = await store.status(service.name, service.prefix);
        if (now.phase !== 'canary') throw new StranglerError(`${service.prefix} left the canary (now "${now.phase}") while the progressive canary ran; stopped`, 'CHECK_FAILED');
        onEvent({ kind: 'waiting', weight, remainingMs: Math.max(0, until - Date.now()) });
        const sofar = await readRouteFigures(redis, keys, service.name, 'service', started, Date.now()).catch(() => null);
        if (sofar && sofar.noinstance > 0) break;
      }
      const [analysis] = await runChecks(cutover.probe(progress.intervalMs, limits(progress)), service, ['canary-analysis']);
      if (analysis.ok) await store.recordAnalysis(service.name, [analysis]).catch(() => undefined);
      if (!analysis.ok) {
        progress = { ...progress, failures: progress.failures + 1 };
        await store.writeProgress(service.name, progress);
        await store.recordAnalysis(service.name, [analysis]).catch(() => undefined);
        onEvent({ kind: 'analysis', weight, result: analysis, failures: progress.failures, threshold: progress.threshold });
        if (progress.failures >= progress.threshold || !analysis.retriable) {
          const reason = `automatic rollback after ${progress.failures} failed analyses at ${weight}%: ${analysis.reason}`;
          const outcome = await cutover.rollback(service.prefix, reason, { automatic: true });
          onEvent({ kind: 'rolled-back', reason, outcome });
          throw new StranglerError(reason, 'CHECK_FAILED', { rolledBack: true });
        }
        continue;
      }
      onEvent({ kind: 'analysis', weight, result: analysis, failures: 0, threshold: progress.threshold });
      progress = { ...progress, index: progress.index + 1, failures: 0 };
      const nextWeight = progress.steps[progress.index];
      let outcome: ChangeOutcome;
      try {
        outcome = await cutover.change(service.prefix, nextWeight >= 100 ? { kind: 'full', methods: o.methods } : { kind: 'canary', weight: nextWeight, methods: o.methods }, {
          reason: o.reason,
          force: o.force,
          progress: nextWeight >= 100 ? null : progress,
          locked: true,
          analysisWindowMs: progress.intervalMs,
          thresholds: limits(progress),
        });
      } catch (err) {
        // A preflight of the next step failed (lag, health...): stay at this weight and count it.
        if (!(err instanceof StranglerError) || err.code !== 'CHECK_FAILED') throw err;
        progress = { ...progress, index: progress.index - 1, failures: progress.failures + 1 };
        await store.writeProgress(service.name, progress);
        const result: CheckResult = { name: 'canary-analysis', ok: false, retriable: true, reason: err.message };
        onEvent({ kind: 'analysis', weight, result, failures: progress.failures, threshold: progress.threshold });
        if (progress.failures >= progress.threshold) {
          const reason = `automatic rollback after ${progress.failures} failed checks at ${weight}%: ${err.message}`;
          const rolled = await cutover.rollback(service.prefix, reason, { automatic: true });
          onEvent({ kind: 'rolled-back', reason, outcome: rolled });
          throw new StranglerError(reason, 'CHECK_FAILED', { rolledBack: true });
        }
        continue;
      }
      onEvent({ kind: 'step', weight: nextWeight, outcome });
      if (nextWeight >= 100) {
        onEvent({ kind: 'done', outcome });
        return outcome;
      }
    }
  } finally {
    await store.unlock(service.prefix, holder).catch(() => undefined);
  }
}
