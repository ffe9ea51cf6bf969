import { createPublicKey } from 'node:crypto';
import { createLocalJWKSet, createRemoteJWKSet, decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify, type FlattenedJWSInput, type JWSHeaderParameters, type JWTPayload } from 'jose';
import { StranglerError } from '../core/errors.ts';

/** Who a verified token says the caller is. */
export interface Identity {
  /** The user id, as a string (from the issuer's user id claim: `sub` by default). */
  sub: string;
  email?: string;
  iss: string;
}

export type TokenVerifier = (token: string) => Promise<Identity>;

/** The algorithms the toolkit accepts: HMAC with a secret, or a public key (PEM or JWKS). Never `none`. */
export const HMAC_ALGORITHMS = ['HS256', 'HS384', 'HS512'] as const;
export const KEY_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;
export type HmacAlgorithm = (typeof HMAC_ALGORITHMS)[number];
export type KeyAlgorithm = (typeof KEY_ALGORITHMS)[number];

/**
 * One issuer of tokens the gateway accepts: the monolith (Flask-JWT-Extended, Django REST
 * simplejwt, Devise-JWT…), an auth service, several of either.
 */
export type IssuerSpec = {
  name: string;
  /** The `iss` a token must carry; null: tokens of this issuer carry none (or any), and it is not checked. */
  issuer: string | null;
  /** Expected `aud`, when its tokens carry one. */
  audience?: string;
  /** The claim holding the user id (a string or a number): `sub` unless the framework uses another (`identity`, `user_id`). */
  userIdClaim: string;
} & ({ kind: 'secret'; secret: string; algorithms: HmacAlgorithm[] } | { kind: 'pem'; publicKey: string; algorithms: KeyAlgorithm[] } | { kind: 'jwks'; jwksUrl: string; algorithms: KeyAlgorithm[] });

export interface VerifierOptions {
  issuers: IssuerSpec[];
  /** Clock skew tolerated on exp/nbf, seconds. */
  clockToleranceSeconds?: number;
  /** Deadline of a JWKS fetch. */
  jwksTimeoutMs?: number;
  /** JWKS caching (a verifier refetches on an unknown kid at most every cooldownMs, and at the latest after cacheMaxAgeMs). */
  jwksCooldownMs?: number;
  jwksCacheMaxAgeMs?: number;
}

type Key = Parameters<typeof jwtVerify>[1];

const CONTROL = /[\x00-\x1f\x7f]/;

function unauthenticated(message: string): StranglerError {
  return new StranglerError(message, 'UNAUTHENTICATED');
}

/**
 * One verifier for every issuer of the migration period.
 * SECURITY: `none` is never accepted; each issuer's key is used only with that issuer's own
 * closed list of algorithms, and an HMAC secret only with HS* and a public key only with
 * RS/PS/ES/EdDSA, so a token can never make the gateway check an HMAC against a public key
 * (algorithm confusion); a token naming an `iss` is only tried against issuers expecting it
 * (or expecting none); `exp` is required; the user id must be present.
 */
export function createTokenVerifier(options: VerifierOptions): TokenVerifier {
  const issuers = options.issuers.map((spec) => ({ spec, key: keyOf(spec, options) }));
  const tolerance = options.clockToleranceSeconds ?? 5;
  return async function verifyToken(token: string): Promise<Identity> {
    let alg: string | undefined;
    let claims: JWTPayload;
    try {
      alg = decodeProtectedHeader(token).alg;
      claims = decodeJwt(token);
    } catch {
      throw unauthenticated('the bearer token is not a JWT');
    }
    const candidates = issuers.filter(({ spec }) => (spec.algorithms as readonly string[]).includes(alg ?? '') && (spec.issuer === null || spec.issuer === claims.iss));
    if (candidates.length === 0) {
      const byAlg = issuers.filter(({ spec }) => (spec.algorithms as readonly string[]).includes(alg ?? ''));
      if (byAlg.length === 0) throw unauthenticated(`tokens signed with alg ${JSON.stringify(alg ?? null)} are not accepted`);
      throw unauthenticated(`the token's iss claim is not valid (${claims.iss === undefined ? 'missing' : JSON.stringify(claims.iss)})`);
    }
    let first: unknown = null;
    for (const { spec, key } of candidates) {
      try {
        const { payload } = await jwtVerify(token, key, {
          algorithms: spec.algorithms,
          ...(spec.issuer !== null ? { issuer: spec.issuer } : {}),
          ...(spec.audience ? { audience: spec.audience } : {}),
          clockTolerance: tolerance,
          requiredClaims: ['exp'],
        });
        const id = payload[spec.userIdClaim];
        if ((typeof id !== 'string' && typeof id !== 'number') || id === '') throw unauthenticated(`the token has no user id (claim ${spec.userIdClaim})`);
        // SECURITY: the id and email travel in headers: a line break or other control character
        // (a user name chosen at registration) must never split or forge one. Refused on both engines.
        if (CONTROL.test(String(id))) throw unauthenticated(`the token's user id (claim ${spec.userIdClaim}) contains control characters`);
        return { sub: String(id), email: typeof payload.email === 'string' && !CONTROL.test(payload.email) ? payload.email : undefined, iss: payload.iss ?? spec.name };
      } catch (err) {
        first ??= err;
      }
    }
    const err = first;
    if (err instanceof StranglerError) throw err;
    // The issuer's keys could not be fetched: not the caller's fault, and worth a retry.
    if (jwksUnreachable(err)) throw new StranglerError(`the keys of the token's issuer could not be fetched (${describeFetchError(err, options.jwksTimeoutMs ?? 1_000)}); retry shortly`, 'NOT_READY');
    throw unauthenticated(describeJoseError(err));
  };
}

function keyOf(spec: IssuerSpec, o: VerifierOptions): Key {
  if (spec.kind === 'secret') return new TextEncoder().encode(spec.secret);
  if (spec.kind === 'pem') return createPublicKey(spec.publicKey);
  return keysFromJwks(spec.jwksUrl, o.jwksTimeoutMs ?? 1_000, o.jwksCooldownMs ?? 5_000, o.jwksCacheMaxAgeMs ?? 600_000);
}

/**
 * An issuer's JWKS, fetched with a deadline, cached, refetched on an unknown `kid`; when a
 * refetch fails (the issuer hangs or is down) the keys fetched before are still used. A key the
 * issuer stops publishing (rotated out, revoked) is dropped at the next successful fetch.
 */
function keysFromJwks(url: string, timeoutMs: number, cooldownMs: number, cacheMaxAgeMs: number) {
  const remote = createRemoteJWKSet(new URL(url), { cooldownDuration: cooldownMs, cacheMaxAge: cacheMaxAgeMs, timeoutDuration: timeoutMs });
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
