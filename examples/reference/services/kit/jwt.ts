import { SignJWT } from 'jose';
import { createTokenVerifier as createVerifier, type Identity, type IssuerSpec, type TokenVerifier } from '../../../../gateway/token-verifier.ts';

export { bearerToken, type Identity, type TokenVerifier } from '../../../../gateway/token-verifier.ts';

export interface LegacyIssuer {
  secret: string;
  /** null: the monolith's tokens carry no `iss`. */
  issuer: string | null;
}

export interface TokenVerifierOptions {
  /** The monolith's HS256 tokens. */
  legacy: LegacyIssuer;
  /** The auth service's RS256 tokens, through its JWKS (cached; refetched on an unknown kid). */
  jwks?: { url: string; issuer: string };
  /** Expected `aud`, when tokens carry one. */
  audience?: string;
  /** Clock skew tolerated on exp/nbf, seconds. */
  clockToleranceSeconds?: number;
  /** Deadline of a JWKS fetch (strangler.yaml gateway.jwksTimeoutMs; default 1 s). */
  jwksTimeoutMs?: number;
}

export async function signLegacyToken(
  user: { id: number | string; email: string },
  issuer: LegacyIssuer & { ttlSeconds: number },
): Promise<string> {
  const jwt = new SignJWT({ email: user.email }).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).setSubject(String(user.id)).setIssuedAt().setExpirationTime(`${issuer.ttlSeconds}s`);
  if (issuer.issuer) jwt.setIssuer(issuer.issuer);
  return jwt.sign(new TextEncoder().encode(issuer.secret));
}

/**
 * The verifier the reference services use: the monolith's HS256 tokens and the auth service's
 * RS256 ones (through its JWKS), on the toolkit's own verifier (gateway/token-verifier.ts).
 */
export function createTokenVerifier(options: TokenVerifierOptions): TokenVerifier {
  const issuers: IssuerSpec[] = [{ name: 'legacy', kind: 'secret', secret: options.legacy.secret, algorithms: ['HS256'], issuer: options.legacy.issuer, userIdClaim: 'sub', audience: options.audience }];
  if (options.jwks) issuers.push({ name: 'auth', kind: 'jwks', jwksUrl: options.jwks.url, algorithms: ['RS256'], issuer: options.jwks.issuer, userIdClaim: 'sub', audience: options.audience });
  return createVerifier({ issuers, clockToleranceSeconds: options.clockToleranceSeconds, jwksTimeoutMs: options.jwksTimeoutMs, jwksCooldownMs: JWKS_COOLDOWN_MS, jwksCacheMaxAgeMs: JWKS_CACHE_MAX_AGE_MS });
}

/** The auth service's RS256 issuer name and where it publishes its JWKS. */
export const AUTH_ISSUER = 'strangler-auth';
export const JWKS_PATH = '/api/auth/.well-known/jwks.json';
/** A verifier refetches the JWKS on an unknown kid at most this often. */
export const JWKS_COOLDOWN_MS = 5_000;
/** A verifier refetches the JWKS at the latest this long after its last fetch. */
export const JWKS_CACHE_MAX_AGE_MS = 600_000;
/** How long HTTP caches may keep the JWKS (its Cache-Control max-age). */
export const JWKS_MAX_AGE_SECONDS = 300;

/**
 * The JWKS the reference services verify the auth service's tokens with: that service's own
 * (it is one of them), else gateway.jwks. (The gateway, part of the toolkit, knows no service by
 * name: it takes its issuers from strangler.yaml alone.)
 */
export function jwksFor(config: { gateway: { jwks?: { url: string; issuer: string } }; services: Array<{ name: string; url: string }> }): { url: string; issuer: string } | undefined {
  const auth = config.services.find((s) => s.name === 'auth');
  return auth ? { url: `${auth.url}${JWKS_PATH}`, issuer: AUTH_ISSUER } : config.gateway.jwks;
}
