import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { ResolvedConfig } from '../../../../core/config/load.ts';
import { silentLogger } from '../../../../core/logger.ts';
import { openDatabase } from '../../monolith/db.ts';
import { waitFor } from '../../../../stack/ports.ts';
import { migrateService } from '../../migrations/services/index.ts';
import { configYaml, createTestDatabase, dropTestDatabase, isolatedConfig, ROOT } from '../../../../test/harness.ts';
import { startService, type RunningService } from '../app.ts';
import { AUTH_ISSUER, createTokenVerifier, JWKS_COOLDOWN_MS, JWKS_PATH } from '../kit/jwt.ts';
import { signingKeys } from './keys.ts';
import type { KeyPolicy } from './rotation.ts';

/**
 * The auth service's RS256 keys: made at its first start, in its database; rotated with both
 * keys in the JWKS, so tokens signed before a rotation verify until they expire.
 */
// Published twice a verifier's refetch cooldown before signing, as in production (less the HTTP cache's lifetime).
const policy: KeyPolicy = { publishAheadMs: 2 * JWKS_COOLDOWN_MS, keepRetiredMs: 3_000 };
let config: ResolvedConfig;
let cleanup: () => Promise<void>;
let auth: RunningService;
let password: string;

const kidOf = (token: string) => (JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString()) as { kid: string }).kid;
const published = async () => ((await (await fetch(`${auth.url}${JWKS_PATH}`)).json()) as { keys: Array<{ kid: string; d?: string }> }).keys.map((k) => k.kid);
const verifier = () => createTokenVerifier({ legacy: { secret: config.legacy.jwtSecret!, issuer: config.legacy.jwtIssuer }, jwks: { url: `${auth.url}${JWKS_PATH}`, issuer: AUTH_ISSUER } });
async function login(): Promise<string> {
  const res = await fetch(`${auth.url}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'keys@example.test', password }) });
  expect(res.status).toBe(200);
  return ((await res.json()) as { token: string }).token;
}

beforeAll(async () => {
  ({ config, cleanup } = await isolatedConfig('auth_keys'));
  password = 'correct-horse-battery-staple';
  auth = await startService(config, 'auth', { port: 0, logger: silentLogger, tokenFormat: 'rs256', instance: false, signingKeyPolicy: policy });
  const res = await fetch(`${auth.url}/api/auth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'keys@example.test', password }) });
  expect(res.status).toBe(201);
}, 60_000);

afterAll(async () => {
  await auth?.close();
  await cleanup?.();
});

describe('the auth service signing keys', () => {
  it('makes its first key at its first start, before any login, in its database, once even when instances start together', async () => {
    const fresh = await createTestDatabase('auth_keys_first');
    const cfg = { ...config, services: config.services.map((s) => (s.name === 'auth' ? { ...s, databaseUrl: fresh } : s)) };
    await migrateService(cfg.services.find((s) => s.name === 'auth')!);
    const started = await Promise.all([1, 2, 3].map(() => startService(cfg, 'auth', { port: 0, logger: silentLogger, tokenFormat: 'rs256', instance: false, signingKeyPolicy: policy })));
    try {
      const keys = await signingKeys(started[0].db, policy).list();
      expect(keys).toHaveLength(1);
      for (const s of started) {
        const jwks = (await (await fetch(`${s.url}${JWKS_PATH}`)).json()) as { keys: Array<{ kid: string; d?: string; p?: string }> };
        expect(jwks.keys.map((k) => k.kid)).toEqual([keys[0].kid]);
        expect(jwks.keys.every((k) => k.d === undefined && k.p === undefined)).toBe(true); // never the private part
      }
    } finally {
      await Promise.all(started.map((s) => s.close()));
      await dropTestDatabase(fresh);
    }
  });

  it('publishes the next key before signing with it, keeps the previous one until its tokens expire, then deletes it', async () => {
    const keys = signingKeys(auth.db, policy);
    const before = await login();
    const first = kidOf(before);
    const seen = verifier();
    expect((await seen(before)).sub).toEqual(expect.any(String));

    const plan = await keys.rotate();
    expect(plan.retire.map((r) => r.kid)).toEqual([first]);
    expect(plan.add.activatesAt.getTime() - plan.now.getTime()).toBe(policy.publishAheadMs);
    // Both keys are published at once; the old one still signs until the new one activates.
    expect((await published()).sort()).toEqual([first, plan.kid].sort());
    expect((await keys.current()).kid).toBe(first);

    await waitFor('the new key to sign', async () => kidOf(await login()) === plan.kid, 30_000, 200);
    const after = await login();
    // A verifier that fetched the JWKS before the rotation learns the new key, and still knows the old.
    expect((await seen(after)).sub).toBeTruthy();
    expect((await seen(before)).sub).toBeTruthy();
    expect((await verifier()(before)).sub).toBeTruthy();

    // Once every token it signed has expired (keepRetiredMs here), the old key leaves the JWKS ...
    await waitFor('the old key to leave the JWKS', async () => !(await published()).includes(first), 20_000, 200);
    await expect(verifier()(before)).rejects.toThrow(/signed with a key the issuer does not publish/);
    // ... and the next rotation deletes it, private part included.
    const next = await keys.rotate();
    expect(next.remove).toEqual([first]);
    expect((await keys.list()).map((k) => k.kid)).not.toContain(first);
  }, 60_000);

  it('revokes: the new key signs at once and tokens of every other key stop verifying', async () => {
    const keys = signingKeys(auth.db, policy);
    const old = await login();
    const plan = await keys.rotate({ revoke: true });
    expect(plan.remove).toContain(kidOf(old));
    expect(await published()).toEqual([plan.kid]);
    expect(kidOf(await login())).toBe(plan.kid);
    await expect(verifier()(old)).rejects.toThrow(/signed with a key the issuer does not publish/);
  });
});

describe('reference auth keys | rotate-keys', () => {
  const cli = async (...args: string[]) => {
    const dir = mkdtempSync(join(tmpdir(), 'auth-cli-'));
    const file = join(dir, 'strangler.yaml');
    writeFileSync(file, stringify(configYaml(config)));
    const { stdout } = await promisify(execFile)(process.execPath, [resolve(ROOT, 'examples/reference/bin.js'), 'auth', ...args, '--config', file], { cwd: dir, timeout: 60_000 });
    return stdout;
  };

  it('prints the plan with --dry-run and changes nothing, then rotates and lists both keys', async () => {
    const db = openDatabase(config.services.find((s) => s.name === 'auth')!.databaseUrl, 1);
    try {
      const before = (await signingKeys(db, policy).list()).map((k) => k.kid);
      const dry = await cli('rotate-keys', '--dry-run');
      expect(dry).toMatch(/^would add key \(new\): in the JWKS now, signing from \S+ \(in 310 s, once every verifier can have it\)$/m);
      expect(dry).toContain(`would retire key ${before[0]}`);
      expect((await signingKeys(db, policy).list()).map((k) => k.kid)).toEqual(before);

      const done = await cli('rotate-keys');
      expect(done).toMatch(/^add key [0-9a-f-]{36}: in the JWKS now/m);
      expect(done).toMatch(new RegExp(`^retire key ${before[0]}: signs until \\S+, stays in the JWKS until \\S+`, 'm'));
      const listed = await cli('keys');
      expect(listed.trim().split('\n')).toHaveLength(before.length + 1);
      // The current key is still the old one: the new one signs after the publish-ahead time.
      expect(listed).toMatch(new RegExp(`^\\* ${before[0]} `, 'm'));
    } finally {
      await db.destroy();
    }
  }, 60_000);
});
