import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { seedLegacy } from '../test/reference.ts';
import { configYaml, createTestDatabase, dropTestDatabase, legacyTestConfig, ROOT } from '../test/harness.ts';
import { runCli } from '../test/cli.ts';

const dir = mkdtempSync(join(tmpdir(), 'sync-cli-'));
const file = join(dir, 'strangler.yaml');
let cleanup: () => Promise<void>;
let targetUrl: string;

const run = (...args: string[]) => runCli(file, args, { cwd: dir });

beforeAll(async () => {
  const t = await legacyTestConfig('sync_cli');
  await seedLegacy(t.config.legacy.databaseUrl, { users: 3, invoices: 50, seed: 5 });
  targetUrl = await createTestDatabase('sync_cli_auth');
  const config = { ...t.config, services: t.config.services.map((s) => (s.name === 'auth' ? { ...s, databaseUrl: targetUrl } : s)) };
  writeFileSync(file, stringify(configYaml(config)));
  cleanup = async () => {
    await run('sync', 'cleanup', 'auth');
    await dropTestDatabase(targetUrl);
    await t.cleanup();
  };
});
afterAll(async () => cleanup?.());

it('doctor, sync start, status, verify (0, then 2 on a tampered row), stop and cleanup work from the command line', async () => {
  const doctor = await run('doctor');
  expect(doctor.code, doctor.stdout + doctor.stderr).toBe(0);
  expect(doctor.stdout).toMatch(/ok\s+wal_level: wal_level is logical/);
  expect(doctor.stdout).toMatch(/ok\s+table users \(auth\)/);

  const worker = spawn(process.execPath, [resolve(ROOT, 'bin/strangler.js'), 'sync', 'start', 'auth', '--config', file], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  await new Promise<void>((ok, fail) => {
    worker.stderr.on('data', (d) => {
      stderr += d;
      if (stderr.includes('streaming from slot')) ok();
    });
    worker.once('exit', (code) => fail(new Error(`sync start exited ${code}: ${stderr}`)));
  });
  // No terminal: progress comes as plain lines, and the LSN as PostgreSQL prints it.
  expect(stderr).toMatch(/^backfill users +\[[#.]+\] +100% 3\/3 rows, \d+ rows\/s, ETA 0 s, table 1\/1$/m);
  expect(stderr).not.toMatch(/\r/);
  expect(stderr).toMatch(/streaming from slot \S+ at [0-9A-F]{1,8}\/[0-9A-F]{1,8};/);

  const status = await run('sync', 'status', 'auth', '--json');
  expect(JSON.parse(status.stdout)[0]).toMatchObject({ service: 'auth', state: 'streaming', active: true });

  const verify = await run('sync', 'verify', 'auth');
  expect(verify.code, verify.stdout + verify.stderr).toBe(0);
  expect(verify.stdout).toMatch(/ok\s+users → users: 3 rows legacy, 3 service/);
  expect(verify.stdout).toMatch(/^verified at \d+\/[0-9A-F]+ \(source snapshot, worker held there\)/m);
  // Its progress, without a terminal: a plain line as the table starts and as its last chunk is compared.
  expect(verify.stderr).toMatch(/^verify users +\[\.+\] +0% 0\/1 chunks, 0 chunks\/s, ETA -, table 1\/1$/m);
  expect(verify.stderr).toMatch(/^verify users +\[#+\] 100% 1\/1 chunks, \d+ chunks\/s, ETA 0 s, table 1\/1$/m);

  const target = new pg.Client({ connectionString: targetUrl });
  await target.connect();
  await target.query(`UPDATE users SET display_name = 'tampered' WHERE id = 2`);
  await target.end();
  const mismatch = await run('sync', 'verify', 'auth');
  expect(mismatch.code).toBe(2);
  expect(mismatch.stdout).toMatch(/DIFF\s+users → users/);
  expect(mismatch.stdout).toMatch(/differs in key range \(-∞, \+∞\]: 3 rows legacy, 3 service/);
  expect(mismatch.stdout).toMatch(/^MISMATCH at /m);

  const refused = await run('sync', 'cleanup', 'auth');
  expect(refused.code).toBe(2);
  expect(refused.stderr).toMatch(/in use by a running worker/);

  const stop = await run('sync', 'stop', 'auth');
  expect(stop.code).toBe(0);
  const code = await new Promise<number | null>((ok) => worker.once('exit', ok));
  expect(code).toBe(0);
  const cleaned = await run('sync', 'cleanup', 'auth');
  expect(cleaned.stdout).toMatch(/slot yes, publication yes/);
  const unknown = await run('sync', 'start', 'nope');
  expect(unknown.code).toBe(2);
  expect(unknown.stderr).toMatch(/nope/);
}, 90_000);
