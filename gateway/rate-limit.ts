import type { Redis } from 'ioredis';
import { RedisStore } from 'rate-limit-redis';
import type { RedisKeys } from './redis-keys.ts';
import { matchesPrefix } from './path-normalize.ts';

export interface RateLimitRule {
  prefix: string;
  limit: number;
  windowMs: number;
}

export type RateDecision =
  | { limited: false; limit: number; remaining: number; resetMs: number; policy: string }
  | { limited: true; limit: number; remaining: 0; resetMs: number; policy: string }
  | null;

/**
 * Rate limits shared by every gateway instance: express-rate-limit's fixed-window algorithm
 * through its rate-limit-redis store (one store per rule), keyed per user when the request is
 * authenticated, else per client IP. The rule is the longest prefix that matches.
 * If Redis cannot answer, the request passes (fail open, counted): a rate limiter must not turn
 * a Redis outage into an outage of the API.
 */
export function createRateLimiter(rules: RateLimitRule[], redis: Redis, keys: RedisKeys, onStoreError: (err: unknown) => void) {
  const compiled = rules
    .map((r) => {
      const prefix = r.prefix.toLowerCase().replace(/\/+$/, '') || '/';
      const store = new RedisStore({ prefix: keys.rateLimit(prefix), sendCommand: (command: string, ...args: string[]) => redis.call(command, ...args) as Promise<never> });
      store.init({ windowMs: r.windowMs } as never);
      return { ...r, prefix, store, policy: `${r.limit};w=${Math.round(r.windowMs / 1000)}` };
    })
    .sort((a, b) => b.prefix.length - a.prefix.length);

  return async function rateLimit(matchPath: string, clientKey: string): Promise<RateDecision> {
    const rule = compiled.find((r) => matchesPrefix(matchPath, r.prefix));
    if (!rule) return null;
    try {
      const { totalHits, resetTime } = await rule.store.increment(clientKey);
      const resetMs = Math.max(0, (resetTime?.getTime() ?? Date.now() + rule.windowMs) - Date.now());
      if (totalHits > rule.limit) return { limited: true, limit: rule.limit, remaining: 0, resetMs, policy: rule.policy };
      return { limited: false, limit: rule.limit, remaining: rule.limit - totalHits, resetMs, policy: rule.policy };
    } catch (err) {
      onStoreError(err);
      return null;
    }
  };
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
