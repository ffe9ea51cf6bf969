import { createLocalJWKSet, createRemoteJWKSet, decodeProtectedHeader, errors as joseErrors, jwtVerify, SignJWT, type FlattenedJWSInput, type JWSHeaderParameters, type JWTPayload } from 'jose';
import { StranglerError } from '../../core/errors.ts';

/** Who a verified token says the caller is. */
export interface Identity {
  /** The user id, as a string (JWT `sub`). */
  sub: string;
  email?: string;
  iss: string;
}

export interface LegacyIssuer {
  secret: string;
  issuer: string;
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

export type TokenVerifier = (token: string) => Promise<Identity>;

export async function signLegacyToken(
  user: { id: number | string; email: string },
  issuer: LegacyIssuer & { ttlSeconds: number },
): Promise<string> {
  return new SignJWT({ email: user.email })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(String(user.id))
    .setIssuer(issuer.issuer)
    .setIssuedAt()
    .setExpirationTime(`${issuer.ttlSeconds}s`)
    .sign(new TextEncoder().encode(issuer.secret));
}

function unauthenticated(message: string): StranglerError {
  return new StranglerError(message, 'UNAUTHENTICATED');
}

/**
 * One verifier for both issuers of the migration period.
 * SECURITY: the key is chosen by the token's `alg` from a closed list, and each key is used only
 * with its own algorithm: `none` is refused, an HS256 token can never be checked against the
 * RSA public key (algorithm confusion), and the issuer must match the key that verified it.
 */
export function createTokenVerifier(options: TokenVerifierOptions): TokenVerifier {
  const secret = new TextEncoder().encode(options.legacy.secret);
  const jwks = options.jwks ? keysFromJwks(options.jwks.url, options.jwksTimeoutMs ?? 1_000) : null;
  const common = { audience: options.audience, clockTolerance: options.clockToleranceSeconds ?? 5, requiredClaims: ['exp', 'sub'] };

  return async function verifyToken(token: string): Promise<Identity> {
    let alg: string | undefined;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch {
      throw unauthenticated('the bearer token is not a JWT');
    }
    let payload: JWTPayload;
    try {
      if (alg === 'HS256') {
        ({ payload } = await jwtVerify(token, secret, { ...common, algorithms: ['HS256'], issuer: options.legacy.issuer }));
      } else if (alg === 'RS256' && jwks && options.jwks) {
        ({ payload } = await jwtVerify(token, jwks, { ...common, algorithms: ['RS256'], issuer: options.jwks.issuer }));
      } else {
        throw unauthenticated(`tokens signed with alg ${JSON.stringify(alg ?? null)} are not accepted`);
      }
    } catch (err) {
      if (err instanceof StranglerError) throw err;
      // The issuer's keys could not be fetched: not the caller's fault, and worth a retry.
      if (alg === 'RS256' && jwksUnreachable(err)) {
        throw new StranglerError(`the keys of the token's issuer (${options.jwks!.url}) could not be fetched (${describeFetchError(err, options.jwksTimeoutMs ?? 1_000)}); retry shortly`, 'NOT_READY');
      }
      throw unauthenticated(describeJoseError(err));
    }
    if (typeof payload.sub !== 'string' || payload.sub === '') throw unauthenticated('the token has no subject');
    return { sub: payload.sub, email: typeof payload.email === 'string' ? payload.email : undefined, iss: payload.iss ?? '' };
  };
}

/**
 * The auth service's JWKS, fetched with a deadline, cached, refetched on an unknown `kid`; when a
 * refetch fails (the service hangs or is down) the keys fetched before are still used. A key the
 * service stops publishing (rotated out, revoked) is dropped at the next successful fetch.
 */
function keysFromJwks(url: string, timeoutMs: number) {
  const remote = createRemoteJWKSet(new URL(url), { cooldownDuration: JWKS_COOLDOWN_MS, cacheMaxAge: JWKS_CACHE_MAX_AGE_MS, timeoutDuration: timeoutMs });
  return async (header: JWSHeaderParameters, token: FlattenedJWSInput) => {
    try {
      return await remote(header, token);
    } catch (err) {
      const known = remote.jwks();
      if (!known || !jwksUnreachable(err)) throw err;
      return createLocalJWKSet(known)(header, token);
    }
  };
}

/** The JWKS endpoint did not answer (in time, or at all, or not 200), as opposed to a bad token. */
function jwksUnreachable(err: unknown): boolean {
  if (err instanceof joseErrors.JWKSTimeout) return true;
  if (err instanceof TypeError && /fetch failed/.test(err.message)) return true;
  return err instanceof joseErrors.JOSEError && /JSON Web Key Set HTTP response/.test(err.message);
}

function describeFetchError(err: unknown, timeoutMs: number): string {
  if (err instanceof joseErrors.JWKSTimeout) return `no answer within ${timeoutMs} ms`;
  const cause = (err as { cause?: { code?: string } }).cause?.code;
  return cause ?? (err as Error).message;
}

function describeJoseError(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'the token has expired; log in again';
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `the token's ${err.claim} claim is not valid (${err.reason})`;
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'the token signature is not valid';
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'the token was signed with a key the issuer does not publish';
  if (err instanceof joseErrors.JOSEError) return `the token is not valid (${err.code})`;
  return 'the token could not be verified';
}

/** The bearer token of an Authorization header, or null. */
export function bearerToken(header: string | undefined): string | null {
  if (!header) return null;
  const match = /^Bearer\s+([A-Za-z0-9._~+/-]+=*)\s*$/i.exec(header);
  return match ? match[1] : null;
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

/** The JWKS every verifier uses: gateway.jwks when set, else the auth service of strangler.yaml. */
export function jwksFor(config: { gateway: { jwks?: { url: string; issuer: string } }; services: Array<{ name: string; url: string }> }): { url: string; issuer: string } | undefined {
  if (config.gateway.jwks) return config.gateway.jwks;
  const auth = config.services.find((s) => s.name === 'auth');
  return auth ? { url: `${auth.url}${JWKS_PATH}`, issuer: AUTH_ISSUER } : undefined;
}
