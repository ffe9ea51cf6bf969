import type { Redis } from 'ioredis';
import type { DependencyHealth } from '../core/redis-health.ts';
import { matchesPrefix } from './path-normalize.ts';

export interface RateLimitRule {
  prefix: string;
  limit: number;
  windowMs: number;
}

export interface RateLimitSync {
  /** How often hits counted locally are added to the shared counters (0: every hit, synchronously). */
  intervalMs: number;
  /** The last this-many hits below a limit are counted synchronously, so the limit holds exactly. */
  exactWithin: number;
}

export type RateDecision =
  | { limited: false; limit: number; remaining: number; resetMs: number; policy: string }
  | { limited: true; limit: number; remaining: 0; resetMs: number; policy: string }
  | null;

interface Counter {
  window: number;
  /** The shared total Redis last answered for this key and window. */
  known: number;
  /** Hits counted here and not yet added to Redis. */
  pending: number;
  /** When `known` came from Redis (ms). */
  knownAt: number;
}

export interface RateLimiterOptions {
  rules: RateLimitRule[];
  redis: Redis;
  /** Where a rule's counters live in Redis (`<this><window number>:<client key>`). */
  keyPrefix: (rulePrefix: string) => string;
  onStoreError: (err: unknown) => void;
  sync?: RateLimitSync;
  /** While not ok, every hit is counted here alone, without a Redis round trip (default: always ok). */
  health?: DependencyHealth;
}

const ALWAYS_OK: DependencyHealth = { ok: true, reason: null, failed: () => undefined, unavailable: () => undefined };

/**
 * Fixed-window rate limits shared by every gateway (windows aligned to multiples of windowMs),
 * keyed per user when authenticated, else per client IP; the longest matching prefix's rule
 * applies. Like Kong's `sync_rate`, hits far from the limit are counted in memory and added to
 * the shared Redis counter every `sync.intervalMs` in one pipeline; within the last
 * `sync.exactWithin` hits of the limit every hit is an INCRBY answered before the request goes on, so
 * the limit holds exactly where it matters; a key idle for two intervals is also asked exactly
 * (its shared total is stale). A limit can be exceeded by at most the hits other gateways let
 * through on a total up to two sync intervals old.
 *
 * If Redis cannot answer (down, or not answering within its command deadline), each gateway
 * goes on counting alone (its own hits against the limit): a Redis outage neither opens the API
 * to floods nor takes it down. While `health` says Redis is unavailable no hit waits on it at
 * all; what was counted meanwhile is added to the shared counters once it is back. Errors are
 * counted. A flush that timed out may still be applied by a Redis that was only slow, and is
 * sent again: after such an outage a count can be high by one interval's hits, never low.
 */
export function createRateLimiter(o: RateLimiterOptions) {
  const { redis, onStoreError } = o;
  const sync = o.sync ?? { intervalMs: 0, exactWithin: 0 };
  const health = o.health ?? ALWAYS_OK;
  const compiled = o.rules
    .map((r) => {
      const prefix = r.prefix.toLowerCase().replace(/\/+$/, '') || '/';
      return {
        ...r,
        prefix,
        keyPrefix: o.keyPrefix(prefix),
        policy: `${r.limit};w=${Math.round(r.windowMs / 1000)}`,
        exactFrom: sync.intervalMs === 0 ? 0 : Math.max(0, r.limit - sync.exactWithin),
        counters: new Map<string, Counter>(),
      };
    })
    .sort((a, b) => b.prefix.length - a.prefix.length);
  type Rule = (typeof compiled)[number];

  const redisKey = (rule: Rule, window: number, clientKey: string) => `${rule.keyPrefix}${window}:${clientKey}`;
  const expireAt = (rule: Rule, window: number) => (window + 1) * rule.windowMs + 1_000;

  /**
   * Adds every pending count to Redis in one pipeline and takes back the shared totals. One at
   * a time: two flushes at once would both send the same pending counts, and Redis would count
   * them twice (clients limited early). A timer tick while one runs is skipped; an explicit
   * flush waits for it and then sends what is left.
   */
  let flushing: Promise<void> = Promise.resolve();
  let busy = false;
  function flush(): Promise<void> {
    flushing = flushing.catch(() => undefined).then(async () => {
      busy = true;
      try {
        await flushOnce();
      } finally {
        busy = false;
      }
    });
    return flushing;
  }

  async function flushOnce(): Promise<void> {
    const batch: Array<{ c: Counter; n: number; key: string; rule: Rule }> = [];
    const now = Date.now();
    for (const rule of compiled) {
      const current = Math.floor(now / rule.windowMs);
      for (const [clientKey, c] of rule.counters) {
        if (c.window < current) {
          // A past window: what it did not flush no longer matters.
          rule.counters.delete(clientKey);
          continue;
        }
        if (c.pending === 0 || !health.ok) continue;
        batch.push({ c, n: c.pending, key: redisKey(rule, c.window, clientKey), rule });
      }
    }
    // Nothing pending (an idle gateway, 20 times a second): no MULTI is built at all.
    if (batch.length === 0) return;
    const multi = redis.multi();
    for (const { c, n, key, rule } of batch) multi.incrby(key, n).pexpireat(key, expireAt(rule, c.window));
    try {
      const results = await multi.exec();
      batch.forEach(({ c, n }, i) => {
        const [err, total] = results![i * 2];
        if (err) throw err;
        c.pending -= n;
        c.known = Number(total);
        c.knownAt = now;
      });
    } catch (err) {
      health.failed(err);
      onStoreError(err);
    }
  }
  // Flushes, and forgets the counters of past windows (also when every hit is synchronous).
  let timer: NodeJS.Timeout | null = null;
  if (compiled.length) {
    timer = setInterval(() => void (busy || flush()), sync.intervalMs || 1_000);
    timer.unref();
  }

  /** The decision, or a promise of it only when the hit is counted in Redis first (near the limit, or a stale total). */
  function rateLimit(matchPath: string, clientKey: string): RateDecision | Promise<RateDecision> {
    const rule = compiled.find((r) => matchesPrefix(matchPath, r.prefix));
    if (!rule) return null;
    const now = Date.now();
    const window = Math.floor(now / rule.windowMs);
    let c = rule.counters.get(clientKey);
    if (!c || c.window !== window) rule.counters.set(clientKey, (c = { window, known: 0, pending: 0, knownAt: 0 }));
    // What other gateways counted reaches this one with its own flushes: a key without hits for
    // two intervals has a stale total, so its next hit asks Redis (a client this slow costs little).
    const stale = now - c.knownAt > 2 * sync.intervalMs;
    if ((stale || c.known + c.pending + 1 > rule.exactFrom) && c.known <= rule.limit) {
      if (health.ok) return exact(rule, c, clientKey, now);
      health.unavailable('rate-limit'); // decided on this gateway's own count
    }
    // Far from the limit, or already over it (a hit over the limit need not be shared), or Redis unavailable.
    c.pending++;
    return decide(rule, c.known + c.pending, now);
  }

  /**
   * Gives one counted hit back (a credential attempt that succeeded): the next flush subtracts it
   * from the shared counter. A hit of a window that has passed is not given back.
   */
  function refund(matchPath: string, clientKey: string): void {
    const rule = compiled.find((r) => matchesPrefix(matchPath, r.prefix));
    const c = rule?.counters.get(clientKey);
    if (c && c.window === Math.floor(Date.now() / rule!.windowMs)) c.pending--;
  }

  /** This hit (and any pending ones) go to Redis before the decision. */
  async function exact(rule: Rule, c: Counter, clientKey: string, now: number): Promise<RateDecision> {
    const n = c.pending + 1;
    c.pending = 0;
    try {
      const key = redisKey(rule, c.window, clientKey);
      const results = await redis.multi().incrby(key, n).pexpireat(key, expireAt(rule, c.window)).exec();
      const [err, value] = results![0];
      if (err) throw err;
      c.known = Math.max(c.known, Number(value));
      c.knownAt = now;
      return decide(rule, c.known, now);
    } catch (err) {
      health.failed(err);
      onStoreError(err);
      c.pending += n; // counted here, added to Redis by a later flush
      return decide(rule, c.known + c.pending, now);
    }
  }

  function decide(rule: Rule, total: number, now: number): RateDecision {
    const resetMs = (Math.floor(now / rule.windowMs) + 1) * rule.windowMs - now;
    if (total > rule.limit) return { limited: true, limit: rule.limit, remaining: 0, resetMs, policy: rule.policy };
    return { limited: false, limit: rule.limit, remaining: rule.limit - total, resetMs, policy: rule.policy };
  }

  return Object.assign(rateLimit, {
    flush,
    refund,
    stop() {
      if (timer) clearInterval(timer);
      timer = null;
    },
  });
}

/** IETF RateLimit headers (draft-ietf-httpapi-ratelimit-headers) and Retry-After on 429. */
export function rateLimitHeaders(d: NonNullable<RateDecision>): Record<string, string> {
  const reset = Math.ceil(d.resetMs / 1000);
  const headers: Record<string, string> = {
    'ratelimit-policy': d.policy,
    ratelimit: `limit=${d.limit}, remaining=${d.remaining}, reset=${reset}`,
    'ratelimit-limit': String(d.limit),
    'ratelimit-remaining': String(d.remaining),
    'ratelimit-reset': String(reset),
  };
  if (d.limited) headers['retry-after'] = String(Math.max(1, reset));
  return headers;
}
