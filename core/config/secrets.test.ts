import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { StranglerError } from '../errors.ts';
import { resolveConfig } from './load.ts';
import { expectedShannon, MIN_SECRET_BITS, secretStrength } from './secret-strength.ts';
import { generateSecret, readSecretFile, requireSecret } from './secrets.ts';

describe('secret strength', () => {
  const accepted: Array<[string, () => string]> = [
    ['openssl rand -base64 32 (the minimum: 256 bits)', () => randomBytes(32).toString('base64')],
    ['openssl rand -base64 48', () => randomBytes(48).toString('base64')],
    ['openssl rand -hex 32', () => randomBytes(32).toString('hex')],
    ['the toolkit’s own generator', generateSecret],
  ];
  it.each(accepted)('accepts %s, every time (200 draws)', (_label, make) => {
    for (let i = 0; i < 200; i++) {
      const secret = make();
      expect(secretStrength(secret).problem, secret).toBeNull();
    }
  });

  const refused: Array<[string, string, RegExp]> = [
    ['the JWT secret the toolkit once shipped', 'dev-only-legacy-secret-change-me', /too short: 32 base64 characters hold at most 192 bits/],
    ['the admin token the toolkit once shipped', 'dev-only-admin-token-change-me', /too short/],
    ['32 bytes of text (long enough for a length check, not for 256 bits)', 'abcdefghijklmnopqrstuvwxyzabcdef', /too short/],
    ['openssl rand -hex 16 (128 bits)', randomBytes(16).toString('hex'), /too short: 32 hex digits hold at most 128 bits/],
    ['two UUIDs (244 random bits, and dashes)', '3f0c6a8e-5a55-4b1e-9c0e-6f1f3f2a9d41' + '8c2d9a71-0b7e-4c55-a3f0-2e9d8b6c1a07', /not random enough/],
    ['a phrase', 'correct horse battery staple is a famous passphrase really', /not random enough/],
    ['a word repeated', 'supersecret'.repeat(4), /not random enough/],
    ['one character repeated', 'a'.repeat(64), /not random enough/],
  ];
  it.each(refused)('refuses %s, saying why', (_label, secret, why) => {
    expect(secretStrength(secret).problem).toMatch(why);
  });

  it('needs 256 bits of capacity whatever the alphabet: 64 hex digits, 43 base64 characters, 78 decimal digits', () => {
    expect(secretStrength(randomBytes(32).toString('hex')).capacityBits).toBe(256);
    expect(secretStrength(randomBytes(32).toString('base64url')).capacityBits).toBeGreaterThanOrEqual(MIN_SECRET_BITS);
    expect(secretStrength(randomBytes(31).toString('hex')).problem).toMatch(/too short/);
    expect(secretStrength('1'.repeat(77)).problem).toMatch(/too short: 77 decimal digits/);
  });

  it('expects the Shannon entropy a random string of that length measures (below log2 k for short strings)', () => {
    expect(expectedShannon(10_000, 16)).toBeCloseTo(4, 2);
    // 43 base64 characters (32 bytes) measure about 4.85 bits each, not 6.
    expect(expectedShannon(43, 64)).toBeGreaterThan(4.7);
    expect(expectedShannon(43, 64)).toBeLessThan(5);
  });
});

describe('secrets in the configuration', () => {
  const strong = generateSecret();

  it('has no default secret: an empty strangler.yaml resolves with neither', () => {
    const config = resolveConfig({});
    expect(config.legacy.jwtSecret).toBeUndefined();
    expect(config.gateway.adminToken).toBeUndefined();
  });

  it('refuses to hand out a missing secret, in one line saying how to set it (flag, environment, file)', () => {
    const config = resolveConfig({});
    let err: unknown;
    try {
      requireSecret(config, 'legacyJwtSecret', "the gateway verifies the monolith's tokens with it");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StranglerError);
    expect((err as StranglerError).code).toBe('CONFIG_INVALID');
    const message = (err as StranglerError).message;
    expect(message.split('\n')).toHaveLength(1);
    expect(message).toContain('legacy.jwtSecret is not set');
    expect(message).toContain('STRANGLER_LEGACY_JWT_SECRET="$(openssl rand -base64 48)"');
    expect(message).toContain('--legacy-jwt-secret-file <file>');
    expect(message).toContain('set legacy.jwtSecret in a strangler.yaml kept out of version control');
  });

  it('holds a secret from the environment or a file flag to the same rule as one in the file, naming where it came from', () => {
    expect(() => resolveConfig({}, { adminToken: 'change-me-change-me-change-me-change-me!', secretSources: { adminToken: 'STRANGLER_ADMIN_TOKEN' } })).toThrow(
      /^STRANGLER_ADMIN_TOKEN: the secret is (too short|not random enough).*generate one with: openssl rand -base64 48$/,
    );
    expect(resolveConfig({}, { adminToken: strong, legacyJwtSecret: strong }).gateway.adminToken).toBe(strong);
  });

  it('takes as admin token only what an Authorization header carries as is (RFC 6750 b64token)', () => {
    const spaced = `${generateSecret().slice(0, 30)} ${generateSecret().slice(0, 30)}`;
    expect(() => resolveConfig({ gateway: { adminToken: spaced } })).toThrow(/gateway\.adminToken: the token is sent in an Authorization header/);
    expect(() => resolveConfig({}, { adminToken: spaced })).toThrow(/^gateway\.adminToken: the token is sent in an Authorization header/);
    expect(resolveConfig({ gateway: { adminToken: randomBytes(48).toString('base64') } }).gateway.adminToken).toMatch(/^[A-Za-z0-9+/]+=*$/);
    // The JWT secret is never sent anywhere: any characters do.
    expect(resolveConfig({ legacy: { jwtSecret: spaced } }).legacy.jwtSecret).toBe(spaced);
  });

  it('lets an override win over the file', () => {
    const other = generateSecret();
    expect(resolveConfig({ legacy: { jwtSecret: strong } }, { legacyJwtSecret: other }).legacy.jwtSecret).toBe(other);
    expect(resolveConfig({ legacy: { jwtSecret: strong } }).legacy.jwtSecret).toBe(strong);
  });

  it('reads a secret file without its final newline, and refuses an empty or binary one', () => {
    const dir = mkdtempSync(join(tmpdir(), 'secret-'));
    writeFileSync(join(dir, 'ok'), `${strong}\n`);
    writeFileSync(join(dir, 'empty'), '\n');
    writeFileSync(join(dir, 'binary'), Buffer.from([0xff, 0xfe, 0x00, 0x81]));
    expect(readSecretFile(join(dir, 'ok'), '--admin-token-file')).toBe(strong);
    expect(() => readSecretFile(join(dir, 'empty'), '--admin-token-file')).toThrow(/the file is empty/);
    expect(() => readSecretFile(join(dir, 'binary'), '--admin-token-file')).toThrow(/not text/);
    expect(() => readSecretFile(join(dir, 'missing'), '--admin-token-file')).toThrow(/cannot read it \(ENOENT\)/);
  });
});
