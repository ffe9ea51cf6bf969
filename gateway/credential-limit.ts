import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { DependencyHealth } from '../core/redis-health.ts';
import { createRateLimiter, type RateDecision, type RateLimitSync } from './rate-limit.ts';
import type { RedisKeys } from './redis-keys.ts';

/** strangler.yaml's gateway.credentialLimits. */
export interface CredentialLimitsConfig {
  enabled: boolean;
  paths?: string[];
  perAddress: false | { limit: number; windowMs: number };
  perAccount: false | { limit: number; windowMs: number };
  accountFields: string[];
  maxBodyBytes: number;
  countSuccessful: boolean;
}

/** Methods that present credentials (a GET to a login path is not an attempt). */
const ATTEMPTS = new Set(['POST', 'PUT', 'PATCH']);

const normalizePath = (p: string) => p.toLowerCase().replace(/\/+$/, '') || '/';

/** The credential endpoints: `paths` when set, else every public path (those reachable without a token). */
export function credentialPaths(config: Pick<CredentialLimitsConfig, 'paths'>, publicPaths: readonly string[]): string[] {
  return [...new Set((config.paths ?? publicPaths).map(normalizePath))];
}

/**
 * Pure: the account a credential attempt names, from a JSON object or a form
 * (application/x-www-form-urlencoded) body: the first of `fields` present with a non-empty string
 * value, trimmed and lowercased (two spellings of one account share a count). Null when there is
 * none or the body cannot be read.
 */
export function accountFrom(body: Buffer, contentType: string | undefined, fields: readonly string[]): string | null {
  const type = (contentType ?? '').split(';')[0].trim().toLowerCase();
  let get: (field: string) => unknown;
  if (type === 'application/x-www-form-urlencoded') {
    const form = new URLSearchParams(body.toString('utf8'));
    get = (f) => form.get(f);
  } else {
    // JSON, also when the content type is missing or wrong (the upstream may parse it anyway).
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      return null;
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return null;
    get = (f) => (Object.hasOwn(parsed as object, f) ? (parsed as Record<string, unknown>)[f] : undefined);
  }
  for (const field of fields) {
    const value = get(field);
    if (typeof value === 'string' && value.trim() !== '') return value.trim().toLowerCase();
  }
  return null;
}

/** SECURITY: an account is counted under a hash, so Redis never holds the email or user name. */
export function accountKey(account: string): string {
  return `acct:${createHash('sha256').update(account).digest('hex').slice(0, 32)}`;
}

export interface CredentialLimitsDeps {
  redis: Redis;
  keys: RedisKeys;
  sync: RateLimitSync;
  health?: DependencyHealth;
  onStoreError: (err: unknown) => void;
}

/**
 * Limits on credential attempts (brute force, credential stuffing): writes to the credential
 * endpoints are counted per client address before they go on, and per account once the body
 * has been read. Unless `countSuccessful`, an attempt that succeeds (2xx, 3xx) or that the
 * upstream failed (5xx) is given back: only refused credentials (4xx) add up, so users who log
 * in often, or many users behind one address, are not limited. Counts are shared by every
 * gateway like the other rate limits.
 */
export function createCredentialLimits(config: CredentialLimitsConfig, publicPaths: readonly string[], deps: CredentialLimitsDeps) {
  const paths = new Set(config.enabled ? credentialPaths(config, publicPaths) : []);
  const limiter = (kind: 'address' | 'account', rule: CredentialLimitsConfig['perAddress']) =>
    rule && paths.size
      ? createRateLimiter({ rules: [...paths].map((prefix) => ({ prefix, ...rule })), redis: deps.redis, keyPrefix: (p) => deps.keys.credentialLimit(kind, p), onStoreError: deps.onStoreError, sync: deps.sync, health: deps.health })
      : null;
  const byAddress = limiter('address', config.perAddress);
  const byAccount = limiter('account', config.perAccount);

  return {
    /** Whether the request is a credential attempt: a Set lookup, nothing else on other requests. */
    applies(method: string, matchPath: string): boolean {
      return paths.size > 0 && ATTEMPTS.has(method) && paths.has(matchPath);
    },
    /** The per-address decision (this attempt counted), or null with no address limit. */
    checkAddress(matchPath: string, address: string): RateDecision | Promise<RateDecision> {
      return byAddress ? byAddress(matchPath, `ip:${address}`) : null;
    },
    /** Whether the body has to be read (a per-account limit), and up to how many bytes it is looked into. */
    readsBody: byAccount !== null,
    maxBodyBytes: config.maxBodyBytes,
    /** The account the body names (null: none, or the body is too large to look into). */
    account(body: Buffer, contentType: string | undefined): string | null {
      return body.length <= config.maxBodyBytes ? accountFrom(body, contentType, config.accountFields) : null;
    },
    /** The per-account decision (this attempt counted), or null with no account limit. */
    checkAccount(matchPath: string, account: string): RateDecision | Promise<RateDecision> {
      return byAccount ? byAccount(matchPath, accountKey(account)) : null;
    },
    /** The attempt's answer: gives it back unless it was refused credentials (4xx) or successes count too. */
    settle(matchPath: string, address: string, account: string | null, status: number): void {
      if (config.countSuccessful || (status >= 400 && status < 500)) return;
      byAddress?.refund(matchPath, `ip:${address}`);
      if (account !== null) byAccount?.refund(matchPath, accountKey(account));
    },
    async stop(): Promise<void> {
      for (const l of [byAddress, byAccount]) {
        l?.stop();
        await l?.flush();
      }
    },
  };
}

export type CredentialLimits = ReturnType<typeof createCredentialLimits>;
