import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, importJWK, SignJWT, type JWK } from 'jose';
import type { Knex } from 'knex';
import { JWKS_COOLDOWN_MS, JWKS_MAX_AGE_SECONDS } from '../kit/jwt.ts';
import { planRotation, publishedAt, signingKeyAt, type KeyPolicy, type KeyRow, type RotationPlan } from './rotation.ts';

export interface SigningKey extends KeyRow {
  privateJwk: JWK;
  publicJwk: JWK;
}

/**
 * How long keys overlap, from the lifetime of the tokens they sign: a new key is published a
 * full JWKS cache lifetime (its max-age) plus the verifiers' refetch cooldown before it signs,
 * so that every verifier, and any HTTP cache between, has it first; a key that stopped signing
 * stays published for the lifetime of a token plus the verifiers' clock tolerance and a minute.
 */
export function keyPolicy(tokenTtlSeconds: number): KeyPolicy {
  return { publishAheadMs: JWKS_MAX_AGE_SECONDS * 1000 + 2 * JWKS_COOLDOWN_MS, keepRetiredMs: (tokenTtlSeconds + 5 + 60) * 1000 };
}

const TABLE = 'signing_keys';
/** SECURITY: one writer of the key table at a time, across every auth instance and the CLI. */
const LOCK = "SELECT pg_advisory_xact_lock(hashtext('strangler:signing_keys'))";

const fromRow = (r: Record<string, any>): SigningKey => ({
  kid: r.kid,
  privateJwk: r.private_jwk,
  publicJwk: r.public_jwk,
  createdAt: r.created_at,
  activatesAt: r.activates_at,
  retiredAt: r.retired_at,
});

/**
 * The auth service's RS256 keys, in its own database (never in the repository): the first is
 * made at the service's first start, `reference auth rotate-keys` adds the next. Times come from
 * the database's clock, so every instance agrees on which key signs.
 * SECURITY: whoever reads this table can sign tokens; protect the auth database and its backups.
 */
export function signingKeys(db: Knex, policy: KeyPolicy) {
  // The database's clock when asked, not its transaction's start (now()): an instance that waited
  // for the lock behind another's first key must see that key as already signing, or it makes a
  // second one.
  const now = async (trx: Knex | Knex.Transaction = db): Promise<Date> => (await trx.raw('SELECT clock_timestamp() AS now')).rows[0].now;
  const all = async (trx: Knex | Knex.Transaction = db) => ({ keys: (await trx(TABLE)).map(fromRow), now: await now(trx) });
  const newKey = async (activatesAt: Date) => {
    const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
    const kid = randomUUID();
    return {
      kid,
      private_jwk: { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' },
      public_jwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' },
      activates_at: activatesAt,
    };
  };

  return {
    /** Every key, newest first. */
    async list(): Promise<SigningKey[]> {
      return (await db(TABLE).orderBy('activates_at', 'desc').orderBy('created_at', 'desc')).map(fromRow);
    },

    /** The key that signs now: the one activated last. */
    async current(): Promise<SigningKey> {
      const { keys, now: at } = await all();
      return signingKeyAt(keys, at) ?? this.ensure();
    },

    /** At first start: a key, signing at once, unless there is one. Safe for instances starting together. */
    async ensure(): Promise<SigningKey> {
      return db.transaction(async (trx) => {
        await trx.raw(LOCK);
        const { keys, now: at } = await all(trx);
        const found = signingKeyAt(keys, at);
        if (found) return found;
        const [inserted] = await trx(TABLE).insert(await newKey(at)).returning('*');
        return fromRow(inserted);
      });
    },

    /** What rotate() would do now (`--dry-run`). */
    async plan(options: { revoke?: boolean } = {}): Promise<RotationPlan> {
      const { keys, now: at } = await all();
      return planRotation(keys, at, policy, options);
    },

    /** Adds the next key, retires the current one, deletes those whose tokens have all expired. */
    async rotate(options: { revoke?: boolean } = {}): Promise<RotationPlan & { kid: string }> {
      return db.transaction(async (trx) => {
        await trx.raw(LOCK);
        const { keys, now: at } = await all(trx);
        const plan = planRotation(keys, at, policy, options);
        for (const r of plan.retire) await trx(TABLE).where({ kid: r.kid }).update({ retired_at: r.retiredAt });
        if (plan.remove.length) await trx(TABLE).whereIn('kid', plan.remove).delete();
        const key = await newKey(plan.add.activatesAt);
        await trx(TABLE).insert(key);
        return { ...plan, kid: key.kid };
      });
    },

    /** The public keys verifiers may meet: the next one, the current one, and those retired within keepRetiredMs. */
    async jwks(): Promise<{ keys: JWK[] }> {
      const { keys, now: at } = await all();
      return { keys: publishedAt(keys, at, policy).map((k) => k.publicJwk) };
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

export type SigningKeys = ReturnType<typeof signingKeys>;
