import type { Redis } from 'ioredis';
import type { Logger } from '../core/logger.ts';
import type { DependencyHealth } from '../core/redis-health.ts';
import { compareResponses, compileIgnorePaths, generalizePath, noiseOf, type Comparison, type IgnoreMatcher } from './json-diff.ts';
import type { GatewayMetrics } from './metrics.ts';
import type { RedisKeys } from './redis-keys.ts';
import type { Endpoint } from './upstreams.ts';

export interface ShadowOptions {
  concurrency: number;
  timeoutMs: number;
  maxBodyBytes: number;
  samples: number;
  /** How long a difference may take to settle before it counts as a mismatch (see `settles`; 0: at once). */
  recheckMs: number;
  /** Per service: ignore paths from strangler.yaml (compiled once here). */
  ignorePaths: Record<string, string[]>;
  /**
   * Ask legacy a second time alongside the service (GET and HEAD only), so that what legacy's
   * own two answers differ in is noise, not a mismatch (default true; costs one more legacy read per mirror).
   */
  cancelNoise?: boolean;
}

/** How one shadowed request was judged. noise: the answers differed only where legacy differs from itself. */
export type ShadowOutcome = 'match' | 'noise' | 'lagged' | 'mismatch' | 'skipped' | 'error';

/** Legacy-vs-legacy differences kept per request: more than this and the noise model is incomplete (it errs towards mismatch). */
const NOISE_DIFFS = 1_000;
/** Noisy paths recorded per request for `strangler diff` (a map keyed by ids would otherwise add a field per id). */
const NOISE_PATHS_RECORDED = 20;

export interface CapturedResponse {
  status: number;
  contentType?: string;
  /** null when the body was larger than maxBodyBytes. */
  body: Buffer | null;
}

/** Reads a stream into a buffer up to `max` bytes; past it, keeps draining and returns null. */
export async function readCapped(body: AsyncIterable<Buffer>, max: number): Promise<Buffer | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  let over = false;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > max) over = true;
    if (!over) chunks.push(chunk);
  }
  return over ? null : Buffer.concat(chunks);
}

/**
 * Shadow traffic: the client is served by legacy; the same safe request goes to the service in
 * the background, within a concurrency bound (excess is skipped and counted, never queued, so
 * shadowing can never slow the client down), a timeout and a body cap. The two answers are
 * compared and the outcome counted in Redis; mismatches keep the last N samples for `strangler diff`.
 *
 * Noise (Twitter's Diffy): a GET or HEAD goes to legacy a second time together with the service,
 * in the same concurrency slot. Under writes a list grows and a counter moves between legacy's
 * answer and the service's, so the two legacy answers differ at those JSON paths too; a
 * legacy-vs-service difference only counts where legacy agreed with itself. What is left goes
 * through the lag recheck; the noisy paths seen are counted per service for `strangler diff`.
 */
export function createShadow(options: ShadowOptions, deps: { redis: Redis; keys: RedisKeys; metrics: GatewayMetrics; logger: Logger; health?: DependencyHealth }) {
  const ignore = new Map<string, IgnoreMatcher>(Object.entries(options.ignorePaths).map(([svc, paths]) => [svc, compileIgnorePaths(paths)]));
  let inFlight = 0;
  /** Redis is skipped while unavailable: the outcome is still counted in Prometheus, not shared. */
  const redisUsable = () => {
    if (!deps.health || deps.health.ok) return true;
    deps.health.unavailable('shadow');
    return false;
  };

  const count = (service: string, outcome: ShadowOutcome) => {
    deps.metrics.shadow.inc({ service, outcome });
    if (redisUsable()) deps.redis.hincrby(deps.keys.shadowCounts(service), outcome, 1).catch((err) => deps.health?.failed(err));
  };

  /** Counts the paths legacy's two answers differed in (array positions folded), for `strangler diff`. */
  const learn = (service: string, self: Comparison) => {
    const paths = [...new Set(self.diffs.map((d) => generalizePath(d.path)))].slice(0, NOISE_PATHS_RECORDED);
    if (!self.statusMatch) paths.push('status');
    if (!paths.length || !redisUsable()) return;
    const multi = deps.redis.multi();
    for (const p of paths) multi.hincrby(deps.keys.shadowNoise(service), p, 1);
    multi.exec().catch((err) => deps.health?.failed(err));
  };

  return {
    /** Starts the mirror request now; `legacy` resolves with legacy's captured answer. */
    mirror(service: string, upstream: Pick<Endpoint, 'pool'>, request: { method: string; path: string; headers: Record<string, string | string[]>; requestId: string }, legacy: Promise<CapturedResponse | null>, legacyUpstream?: Pick<Endpoint, 'pool'>): void {
      if (inFlight >= options.concurrency) {
        count(service, 'skipped');
        return;
      }
      inFlight++;
      const ask = async (to: Pick<Endpoint, 'pool'>): Promise<CapturedResponse> => {
        const res = await to.pool.request({
          method: request.method as 'GET',
          path: request.path,
          headers: { ...request.headers, 'x-strangler-shadow': '1' },
          headersTimeout: options.timeoutMs,
          bodyTimeout: options.timeoutMs,
          signal: AbortSignal.timeout(options.timeoutMs),
        });
        const contentType = res.headers['content-type'];
        return { status: res.statusCode, contentType: Array.isArray(contentType) ? contentType[0] : contentType, body: await readCapped(res.body, options.maxBodyBytes) };
      };
      const matcher = ignore.get(service) ?? compileIgnorePaths([]);
      const compare = (l: CapturedResponse, r: CapturedResponse, maxDiffs = 20, noise?: ReturnType<typeof noiseOf>) =>
        compareResponses({ status: l.status, contentType: l.contentType, body: l.body! }, { status: r.status, contentType: r.contentType, body: r.body! }, matcher, maxDiffs, noise);
      /**
       * Was the difference lag? A replica passes through every state of its source in commit
       * order, so a service that is only behind answers what legacy answered, a little later.
       * Within `recheckMs` the service is asked again (every 100 ms) until it gives legacy's first
       * answer; failing that, both sides are asked once more together. Either agreement: lag.
       */
      const settles = async (first: CapturedResponse): Promise<boolean> => {
        if (!options.recheckMs) return false;
        const until = Date.now() + options.recheckMs;
        while (Date.now() < until) {
          await new Promise((r) => setTimeout(r, Math.min(100, options.recheckMs)));
          const again = await ask(upstream).catch(() => null);
          if (again?.body && compare(first, again).match) return true;
        }
        if (!legacyUpstream) return false;
        const [l, r] = await Promise.all([ask(legacyUpstream), ask(upstream)]).catch(() => [null, null]);
        return !!l?.body && !!r?.body && compare(l, r).match;
      };
      const serviceAnswer = ask(upstream);
      // Sent with the service's request, not after it: both see legacy's data at about the same moment.
      const noisy = options.cancelNoise !== false && legacyUpstream && (request.method === 'GET' || request.method === 'HEAD');
      const legacyAgain = noisy ? ask(legacyUpstream).catch(() => null) : Promise.resolve(null);
      void Promise.allSettled([legacy, serviceAnswer, legacyAgain])
        .then(async ([l, s, again]) => {
          if (l.status === 'rejected' || l.value === null) return count(service, 'skipped');
          if (s.status === 'rejected') {
            count(service, 'error');
            return this.sample(service, request, l.value, null, [{ path: '$', kind: 'changed', service: `no answer: ${(s.reason as Error).message}` }]);
          }
          if (l.value.body === null || s.value.body === null) return count(service, 'skipped');
          // What legacy's own two answers differ in: this request's noise (and learned for `strangler diff`).
          const second = again.status === 'fulfilled' ? again.value : null;
          const self = second?.body ? compare(l.value, second, NOISE_DIFFS) : null;
          if (self && !self.match) learn(service, self);
          let cmp = compare(l.value, s.value);
          if (cmp.match) return count(service, 'match');
          if (self && !self.match) {
            cmp = compare(l.value, s.value, 20, noiseOf(self));
            if (cmp.match) return count(service, 'noise');
          }
          if (await settles(l.value)) return count(service, 'lagged');
          count(service, 'mismatch');
          await this.sample(service, request, l.value, s.value, cmp.diffs);
        })
        .catch((err) => deps.logger.warn({ err, service }, 'shadow comparison failed'))
        .finally(() => inFlight--);
    },

    async sample(service: string, request: { method: string; path: string; requestId: string }, legacy: CapturedResponse, svc: CapturedResponse | null, diffs: unknown[]): Promise<void> {
      const text = (b: Buffer | null | undefined) => (b ? b.toString('utf8').slice(0, 4096) : null);
      const sample = {
        at: new Date().toISOString(),
        requestId: request.requestId,
        method: request.method,
        path: request.path,
        legacy: { status: legacy.status, body: text(legacy.body) },
        service: svc ? { status: svc.status, body: text(svc.body) } : null,
        diffs,
      };
      const key = deps.keys.shadowSamples(service);
      if (redisUsable()) await deps.redis.multi().lpush(key, JSON.stringify(sample)).ltrim(key, 0, options.samples - 1).exec().catch((err) => deps.health?.failed(err));
    },

    get inFlight() {
      return inFlight;
    },
  };
}

export type Shadow = ReturnType<typeof createShadow>;
