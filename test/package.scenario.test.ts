import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { freePort, waitFor } from '../stack/ports.ts';
import { gatewayCliYaml, gatewayTestEnv, ROOT, testSecrets } from './harness.ts';

/**
 * The package as a user gets it (issue 23): `npm pack` builds dist/ and packs it; the tarball
 * installs on a clean prefix and its `strangler` runs the built JavaScript, with no TypeScript
 * loader installed, on the machine's Node.
 */
const run = promisify(execFile);
let dir: string;
let bin: string;
let env: Awaited<ReturnType<typeof gatewayTestEnv>>;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'strangler-pack-'));
  await run('npm', ['pack', '--silent', '--pack-destination', dir], { cwd: ROOT, timeout: 300_000 });
  const tarball = readdirSync(dir).find((f) => f.endsWith('.tgz'))!;
  await run('npm', ['install', '-g', '--prefix', join(dir, 'prefix'), join(dir, tarball), '--no-audit', '--no-fund'], { cwd: dir, timeout: 300_000 });
  bin = join(dir, 'prefix', 'bin', 'strangler');
  env = await gatewayTestEnv('package_gateway', ['invoices']);
}, 600_000);
afterAll(async () => {
  await env?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

it('installs from the tarball with dist/ and without sources or tsx', () => {
  const installed = join(dir, 'prefix', 'lib', 'node_modules', 'strangler');
  expect(existsSync(join(installed, 'dist', 'cli', 'main.js'))).toBe(true);
  // The dashboard's page (strangler ui) ships built beside its server.
  expect(existsSync(join(installed, 'dist', 'ui', 'public', 'index.html'))).toBe(true);
  expect(existsSync(join(installed, 'cli', 'main.ts'))).toBe(false);
  expect(existsSync(join(installed, 'node_modules', 'tsx'))).toBe(false);
  expect(existsSync(join(dir, 'prefix', 'lib', 'node_modules', 'tsx'))).toBe(false);
});

it('runs strangler --help and config check from the installed package', async () => {
  const help = await run(bin, ['--help'], { cwd: dir });
  expect(help.stdout).toContain('Move a monolith to services one route prefix at a time.');
  const check = await run(bin, ['config', 'check', '-c', join(ROOT, 'strangler.yaml')], { cwd: dir });
  expect(check.stdout).toMatch(/valid; \d+ services in order/);
  const bad = await run(bin, ['cutover', '/api/nowhere', '--canary', '150', '-c', join(ROOT, 'strangler.yaml')], { cwd: dir }).catch((e) => e);
  expect(bad.code).toBe(2);
  expect(bad.stderr).not.toMatch(/\n\s+at /);
});

it('runs a gateway from the installed package that proxies to legacy', async () => {
  const port = await freePort();
  const file = join(dir, 'strangler.yaml');
  writeFileSync(file, stringify(await gatewayCliYaml(env, port)));
  const child = spawn(bin, ['gateway', '--config', file], {
    cwd: dir,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, STRANGLER_LEGACY_JWT_SECRET: testSecrets.legacyJwtSecret, STRANGLER_ADMIN_TOKEN: testSecrets.adminToken },
  });
  let stderr = '';
  child.stderr.on('data', (c) => (stderr += c));
  try {
    await waitFor('the packaged gateway to answer', async () => (await fetch(`http://127.0.0.1:${port}/health`).catch(() => null))?.ok === true, 60_000, 200);
    const res = await fetch(`http://127.0.0.1:${port}/health`);
    expect(((await res.json()) as { server: string }).server, stderr).toBe('legacy');
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
}, 120_000);
