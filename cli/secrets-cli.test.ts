import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { generateSecret } from '../core/config/secrets.ts';
import { sharedStack } from '../test/harness.ts';

const ROOT = resolve(import.meta.dirname, '..');
const SHIPPED = resolve(ROOT, 'strangler.yaml');
/** The environment of a user who has set no secret (and no dev stack runs in the empty folder). */
const bare = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('STRANGLER_')));

async function run(args: string[], env: NodeJS.ProcessEnv = {}, cwd = mkdtempSync(join(tmpdir(), 'secrets-cli-')), bin = 'bin/strangler.js') {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [resolve(ROOT, bin), ...args], { cwd, env: { ...bare, ...env }, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('commands that need a secret', () => {
  // Pointed at the test stack, so that a command that wrongly started would not touch the machine's Postgres or Redis.
  const at = () => ['--config', SHIPPED, '--postgres-url', sharedStack().pgBaseUrl, '--redis-url', sharedStack().redisUrl];

  it.each([
    ['strangler gateway', ['gateway', '--port', '0'], 'bin/strangler.js'],
    ['the reference example\'s service', ['service', 'invoices', '--port', '0'], 'examples/reference/bin.js'],
    ['the reference example\'s legacy', ['legacy', '--port', '0'], 'examples/reference/bin.js'],
  ])('%s refuses to start without legacy.jwtSecret: exit 2, one line saying how to set it', async (_name, args, bin) => {
    const r = await run([...args, ...at()], {}, undefined, bin);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^error \[CONFIG_INVALID\]: legacy\.jwtSecret is not set and .*; set STRANGLER_LEGACY_JWT_SECRET="\$\(openssl rand -base64 48\)" in the environment, pass --legacy-jwt-secret-file <file>, or set legacy\.jwtSecret in a strangler\.yaml kept out of version control\n$/);
  });

  it('strangler gateway --workers 2 refuses before forking when only the admin token is missing', async () => {
    const r = await run(['gateway', '--workers', '2', '--port', '0', ...at()], { STRANGLER_LEGACY_JWT_SECRET: generateSecret() });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error \[CONFIG_INVALID\]: gateway\.adminToken is not set and .*STRANGLER_ADMIN_TOKEN=.*--admin-token-file <file>/);
  });

  it('refuses a weak secret from the environment or a file flag, naming where it came from', async () => {
    const env = await run(['gateway', ...at()], { STRANGLER_LEGACY_JWT_SECRET: 'dev-only-legacy-secret-change-me' });
    expect(env.code).toBe(2);
    expect(env.stderr).toMatch(/^error \[CONFIG_INVALID\]: STRANGLER_LEGACY_JWT_SECRET: the secret is too short: .*generate one with: openssl rand -base64 48\n$/);
    const dir = mkdtempSync(join(tmpdir(), 'secrets-cli-'));
    writeFileSync(join(dir, 'admin'), 'admin-token-admin-token-admin-token-admin-token\n');
    const file = await run(['gateway', '--admin-token-file', join(dir, 'admin'), ...at()], { STRANGLER_LEGACY_JWT_SECRET: generateSecret() });
    expect(file.code).toBe(2);
    expect(file.stderr).toContain(`--admin-token-file ${join(dir, 'admin')}: the secret is not random enough`);
  });

  it('does not ask a command that needs no secret for one: config check, compose secrets', async () => {
    const check = await run(['config', 'check', '--config', SHIPPED]);
    expect(check.code, check.stderr).toBe(0);
    const dir = mkdtempSync(join(tmpdir(), 'secrets-cli-'));
    const written = await run(['compose', 'secrets'], {}, dir);
    expect(written.code, written.stderr).toBe(0);
    expect(statSync(join(dir, 'secrets.env')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(dir, 'secrets.env'), 'utf8')).toMatch(/^STRANGLER_LEGACY_JWT_SECRET=[A-Za-z0-9_-]{64}$/m);
    const again = await run(['compose', 'secrets'], {}, dir);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/secrets\.env exists; .*pass --force to overwrite it/);
  });
});
