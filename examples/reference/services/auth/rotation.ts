/**
 * Rotation of the auth service's signing keys, as a plan (pure: the executor in keys.ts applies
 * it in one transaction, `--dry-run` prints it).
 *
 * A key's life: published (in the JWKS, not signing) → current (signing, from `activatesAt`) →
 * retired (not signing, still published until every token it signed has expired) → deleted.
 */

export interface KeyPolicy {
  /** How long a new key is published before it signs. */
  publishAheadMs: number;
  /** How long a key stays published after it stopped signing. */
  keepRetiredMs: number;
}

export interface KeyRow {
  kid: string;
  createdAt: Date;
  /** When it starts signing. */
  activatesAt: Date;
  /** When it stops signing (set when the next key is added), or null. */
  retiredAt: Date | null;
}

export interface RotationPlan {
  now: Date;
  /** The new key: published at once, signing from activatesAt. */
  add: { activatesAt: Date };
  /** Keys that stop signing when the new one starts, published until inJwksUntil. */
  retire: Array<{ kid: string; retiredAt: Date; inJwksUntil: Date }>;
  /** Keys deleted now, private part included (every token they signed has expired, or `revoke`). */
  remove: string[];
}

/**
 * The next rotation. `revoke` (a key has leaked): the new key signs at once and every other key
 * is deleted, so tokens they signed stop verifying as soon as each verifier refetches the JWKS.
 */
export function planRotation(keys: ReadonlyArray<KeyRow>, now: Date, policy: KeyPolicy, options: { revoke?: boolean } = {}): RotationPlan {
  if (options.revoke) return { now, add: { activatesAt: now }, retire: [], remove: keys.map((k) => k.kid) };
  const activatesAt = new Date(now.getTime() + policy.publishAheadMs);
  return {
    now,
    add: { activatesAt },
    retire: keys.filter((k) => k.retiredAt === null).map((k) => ({ kid: k.kid, retiredAt: activatesAt, inJwksUntil: new Date(activatesAt.getTime() + policy.keepRetiredMs) })),
    remove: keys.filter((k) => k.retiredAt !== null && k.retiredAt.getTime() + policy.keepRetiredMs <= now.getTime()).map((k) => k.kid),
  };
}

/** The key that signs at `now`: the one activated last (ties: created last). */
export function signingKeyAt<K extends KeyRow>(keys: ReadonlyArray<K>, now: Date): K | undefined {
  return keys
    .filter((k) => k.activatesAt.getTime() <= now.getTime())
    .sort((a, b) => b.activatesAt.getTime() - a.activatesAt.getTime() || b.createdAt.getTime() - a.createdAt.getTime())[0];
}

/** The keys a JWKS publishes at `now`. */
export function publishedAt<K extends KeyRow>(keys: ReadonlyArray<K>, now: Date, policy: KeyPolicy): K[] {
  return keys.filter((k) => k.retiredAt === null || k.retiredAt.getTime() + policy.keepRetiredMs > now.getTime());
}
