import { StranglerError } from '../core/errors.ts';
import { bearerToken, type Identity, type TokenVerifier } from './token-verifier.ts';
import { matchesPrefix } from './path-normalize.ts';

/** Refused: 401 (UNAUTHENTICATED), or 503 (NOT_READY) when the token's issuer keys could not be fetched. */
export type AuthOutcome = { ok: true; identity?: Identity } | { ok: false; message: string; code?: 'UNAUTHENTICATED' | 'NOT_READY' };

export interface EdgeAuthOptions {
  verify: TokenVerifier;
  protectedPrefixes: string[];
  publicPaths: string[];
  /** Verified tokens kept (by exact token text) until their expiry, so a hot token is checked once. */
  cacheSize?: number;
  /**
   * A monolith that keeps its own sessions: a request with this cookie and no bearer token goes
   * on to the protected prefixes with the cookie untouched (the monolith checks it) and no identity.
   */
  sessionCookie?: string;
}

/**
 * JWT at the edge. Protected prefixes need a valid bearer token; public paths don't (a token
 * sent to one is verified, and identity headers are only ever set from a valid one).
 * SECURITY: the cache holds only tokens that verified, keyed by their full text, and forgets
 * each at its `exp`; a token that failed is never cached as good.
 */
export function createEdgeAuth(options: EdgeAuthOptions) {
  const protectedPrefixes = options.protectedPrefixes.map((p) => p.toLowerCase().replace(/\/+$/, '') || '/');
  const publicPaths = new Set(options.publicPaths.map((p) => p.toLowerCase().replace(/\/+$/, '') || '/'));
  const cache = new Map<string, { identity: Identity; expiresAt: number }>();
  const max = options.cacheSize ?? 10_000;

  const isProtected = (matchPath: string) => !publicPaths.has(matchPath) && protectedPrefixes.some((p) => matchesPrefix(matchPath, p));

  /**
   * The outcome, or a promise of it only when a token has to be verified: a request with no
   * token or a cached one goes on without a turn of the microtask queue.
   */
  const session = options.sessionCookie ? new RegExp(`(?:^|;\\s*)${options.sessionCookie.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}=[^;]`) : null;
  return function authenticate(matchPath: string, authorization: string | undefined, cookie?: string): AuthOutcome | Promise<AuthOutcome> {
    const needed = isProtected(matchPath);
    if (!authorization) {
      // SECURITY: in session-cookie mode the gateway vouches for nothing: the request carries no
      // identity headers (clients' own are stripped), and the monolith checks its session.
      if (needed && session && cookie && session.test(cookie)) return { ok: true };
      return needed ? { ok: false, message: session ? `this endpoint needs a session (cookie ${options.sessionCookie}) or a bearer token` : 'this endpoint needs a bearer token: Authorization: Bearer <token>' } : { ok: true };
    }
    const token = bearerToken(authorization);
    if (!token) return needed ? { ok: false, message: 'the Authorization header is not "Bearer <token>"' } : { ok: true };
    const hit = cache.get(token);
    if (hit && hit.expiresAt > Date.now()) return { ok: true, identity: hit.identity };
    if (hit) cache.delete(token);
    return verify(token, needed);
  };

  async function verify(token: string, needed: boolean): Promise<AuthOutcome> {
    try {
      const identity = await options.verify(token);
      const exp = decodeExp(token);
      if (exp) {
        if (cache.size >= max) cache.delete(cache.keys().next().value as string);
        cache.set(token, { identity, expiresAt: Math.min(exp * 1000, Date.now() + 300_000) });
      }
      return { ok: true, identity };
    } catch (err) {
      // On a public path (login with a stale token) a bad token is not an error; the request
      // simply carries no identity.
      if (!needed) return { ok: true };
      const code = err instanceof StranglerError && err.code === 'NOT_READY' ? 'NOT_READY' : 'UNAUTHENTICATED';
      return { ok: false, code, message: err instanceof Error ? err.message : 'the token could not be verified' };
    }
  }
}

function decodeExp(token: string): number | null {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof payload.exp === 'number' ? payload.exp : null;
  } catch {
    return null;
  }
}
