import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { isListening } from '../stack/ports.ts';
import { freePort } from '../stack/ports.ts';
import { sharedStack } from '../test/harness.ts';
import { looksGenerated } from '../test/secret-scan.ts';

const ROOT = resolve(import.meta.dirname, '..');
const cwd = mkdtempSync(join(tmpdir(), 'dev-up-'));

async function run(...args: string[]) {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [resolve(ROOT, 'bin/strangler.js'), ...args], {
      cwd,
      env: { ...process.env, REDIS_URL: sharedStack().redisUrl },
      timeout: 120_000,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

afterAll(async () => {
  await run('dev', 'down', '--config', join(cwd, 'strangler.yaml'));
});

it('dev up --detach starts the stack and prints where each part listens; status, seed and down work on it', async () => {
  // Every port free (never the 5000-5007 of a demo that may be running).
  const port = await freePort();
  const gatewayPort = await freePort();
  const doc = parse(readFileSync(resolve(ROOT, 'strangler.yaml'), 'utf8'));
  doc.legacy.port = port;
  doc.gateway = { ...doc.gateway, port: gatewayPort, snapshotFile: join(cwd, 'routes.json') };
  for (const s of doc.services) s.port = await freePort();
  writeFileSync(join(cwd, 'strangler.yaml'), stringify(doc));
  const config = ['--config', join(cwd, 'strangler.yaml')];

  const up = await run('dev', 'up', '--detach', '--users', '5', '--invoices', '20', ...config);
  expect(up.code, up.stderr).toBe(0);
  expect(up.stdout).toMatch(/postgres\s+postgres:\/\/postgres@127\.0\.0\.1:\d+/);
  expect(up.stdout).toMatch(new RegExp(`legacy\\s+http://127\\.0\\.0\\.1:${port}`));
  expect(up.stdout).toMatch(new RegExp(`gateway\\s+http://127\\.0\\.0\\.1:${gatewayPort}`));
  for (const s of doc.services) expect(up.stdout).toMatch(new RegExp(`${s.name}\\s+http://127\\.0\\.0\\.1:${s.port}`));
  expect(existsSync(join(cwd, '.strangler/dev-stack.json'))).toBe(true);

  const twice = await run('dev', 'up', '--detach', ...config);
  expect(twice.code).toBe(2);
  expect(twice.stderr).toMatch(/already running/);

  const status = await run('dev', 'status', '--json', ...config);
  expect(status.code).toBe(0);
  expect(JSON.parse(status.stdout).health.legacy).toBe('healthy');

  // Its own secrets, generated for it: in its state (owner only), never printed, used by the gateway.
  const stateFile = join(cwd, '.strangler/dev-stack.json');
  const { secrets } = JSON.parse(readFileSync(stateFile, 'utf8')) as { secrets: Record<string, string> };
  expect(statSync(stateFile).mode & 0o777).toBe(0o600);
  expect(looksGenerated(secrets.legacyJwtSecret) && looksGenerated(secrets.adminToken)).toBe(true);
  expect(`${up.stdout}${status.stdout}`).not.toContain(secrets.legacyJwtSecret);
  expect((await fetch(`http://127.0.0.1:${gatewayPort}/metrics`, { headers: { authorization: `Bearer ${secrets.adminToken}` } })).status).toBe(200);

  const seed = await run('dev', 'seed', '--users', '2', '--invoices', '3', ...config);
  expect(seed.code, seed.stderr).toBe(0);
  const login = await fetch(`http://127.0.0.1:${gatewayPort}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'user7@example.test', password: 'password-7' }),
  });
  expect(login.status).toBe(200);

  const down = await run('dev', 'down', ...config);
  expect(down.code).toBe(0);
  expect(down.stdout).toMatch(/stopped the dev stack/);
  expect(await isListening(port)).toBe(false);
  expect(await isListening(gatewayPort)).toBe(false);
  const after = await run('dev', 'status', ...config);
  expect(after.code).toBe(1);
}, 180_000);
