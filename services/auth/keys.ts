import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, importJWK, SignJWT, type JWK } from 'jose';
import type { Knex } from 'knex';

export interface SigningKey {
  kid: string;
  privateJwk: JWK;
  publicJwk: JWK;
  createdAt: Date;
  retiredAt: Date | null;
}

/**
 * The auth service's RS256 keys, kept in its database. The newest unretired key signs; the
 * JWKS publishes it and keys retired within `keepRetiredMs` (tokens they signed are still valid).
 */
export function signingKeys(db: Knex, options: { keepRetiredMs?: number } = {}) {
  const keep = options.keepRetiredMs ?? 24 * 3600 * 1000;
  const rows = async () =>
    (await db('signing_keys').orderBy('created_at', 'desc')).map((r) => ({ kid: r.kid, privateJwk: r.private_jwk, publicJwk: r.public_jwk, createdAt: r.created_at, retiredAt: r.retired_at }) as SigningKey);

  return {
    /** Adds a new current key and retires the previous one. */
    async rotate(): Promise<SigningKey> {
      const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
      const kid = randomUUID();
      const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
      const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' };
      await db.transaction(async (trx) => {
        await trx('signing_keys').whereNull('retired_at').update({ retired_at: trx.fn.now() });
        await trx('signing_keys').insert({ kid, private_jwk: privateJwk, public_jwk: publicJwk });
      });
      return { kid, privateJwk, publicJwk, createdAt: new Date(), retiredAt: null };
    },
    async current(): Promise<SigningKey> {
      const key = (await rows()).find((k) => !k.retiredAt);
      return key ?? this.rotate();
    },
    async jwks(): Promise<{ keys: JWK[] }> {
      const now = Date.now();
      return { keys: (await rows()).filter((k) => !k.retiredAt || now - k.retiredAt.getTime() < keep).map((k) => k.publicJwk) };
    },
    async sign(user: { id: number; email: string }, issuer: string, ttlSeconds: number): Promise<string> {
      const key = await this.current();
      return new SignJWT({ email: user.email })
        .setProtectedHeader({ alg: 'RS256', kid: key.kid, typ: 'JWT' })
        .setSubject(String(user.id))
        .setIssuer(issuer)
        .setIssuedAt()
        .setExpirationTime(`${ttlSeconds}s`)
        .sign(await importJWK(key.privateJwk, 'RS256'));
    },
  };
}
