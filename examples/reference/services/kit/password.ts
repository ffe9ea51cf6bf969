import { randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';

function scrypt(password: string, salt: Buffer, keylen: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => scryptCb(password, salt, keylen, options, (err, key) => (err ? reject(err) : resolve(key))));
}

/** scrypt cost for new passwords (N=2^15, r=8, p=1: OWASP's minimum for scrypt). */
export const DEFAULT_COST = { N: 1 << 15, r: 8, p: 1 } as const;

/**
 * `scrypt$N$r$p$salt$hash` (base64): the parameters travel with the hash, so a hash copied to
 * another database by the sync verifies there unchanged, and the cost can rise later.
 */
export async function hashPassword(password: string, cost: { N: number; r: number; p: number } = DEFAULT_COST): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(password, salt, 32, { ...cost, maxmem: 128 * cost.N * cost.r * 2 });
  return ['scrypt', cost.N, cost.r, cost.p, salt.toString('base64'), key.toString('base64')].join('$');
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [N, r, p] = parts.slice(1, 4).map(Number);
  if (![N, r, p].every((n) => Number.isInteger(n) && n > 0) || N > 1 << 20) return false;
  const expected = Buffer.from(parts[5], 'base64');
  const key = await scrypt(password, Buffer.from(parts[4], 'base64'), expected.length, { N, r, p, maxmem: 128 * N * r * 2 });
  // SECURITY: constant-time comparison, so timing says nothing about how much of the hash matched.
  return key.length === expected.length && timingSafeEqual(key, expected);
}
