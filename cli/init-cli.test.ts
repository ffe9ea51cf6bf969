import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../core/config/load.ts';
import { legacyTestConfig, sharedStack } from '../test/harness.ts';
import { runCli } from '../test/cli.ts';

const dir = mkdtempSync(join(tmpdir(), 'init-cli-'));
let legacyUrl: string;
let cleanup: () => Promise<void>;

const run = (...args: string[]) => runCli(null, args, { cwd: dir });

beforeAll(async () => {
  const t = await legacyTestConfig('init_cli');
  legacyUrl = t.config.legacy.databaseUrl;
  cleanup = t.cleanup;
});
afterAll(async () => cleanup?.());

it('writes a starting strangler.yaml from the monolith\'s schema that loads, and plan --coupling reports what a config leaves open', async () => {
  // The prefixes from an OpenAPI file, as a team that has one would give them.
  const openapi = join(dir, 'openapi.yaml');
  writeFileSync(openapi, ['openapi: 3.0.0', 'paths:', '  /api/auth/login: {}', '  /api/invoices: {}', '  /api/invoices/{id}: {}', '  /api/templates/{id}/render: {}', ''].join('\n'));
  const init = await run('init', '--legacy-database', legacyUrl, '--openapi', openapi, '--out', 'strangler.yaml');
  expect(init.code, init.stderr).toBe(0);
  expect(init.stdout).toMatch(/extraction order: 1\. auth \(1 tables\) {2}2\. invoices \(2 tables, copies of users\) {2}3\. templates \(1 tables, copies of users\)/);
  expect(init.stdout).toMatch(/left in the monolith: chat_messages, knex_migrations_legacy, knex_migrations_legacy_lock, ocr_documents/);
  const text = readFileSync(join(dir, 'strangler.yaml'), 'utf8');
  expect(text).toMatch(/- source: invoice_items {2}# its name matches invoices/);
  expect(text).toMatch(/# {3}invoices\.user_id → users: invoices reads users \(owned by auth\)/);
  expect(text).not.toMatch(/jwtSecret|adminToken/);
  const config = loadConfig(join(dir, 'strangler.yaml'), { postgresUrl: sharedStack().pgBaseUrl });
  expect(config.services.map((s) => [s.name, s.order, s.dependsOn])).toEqual([
    ['auth', 1, []],
    ['invoices', 2, ['auth']],
    ['templates', 3, ['auth']],
  ]);
  // Not over an existing file without --force.
  const again = await run('init', '--legacy-database', legacyUrl, '--prefixes', '/api/auth', '--out', 'strangler.yaml');
  expect(again.code).toBe(2);
  expect(again.stderr).toMatch(/exists; pass --force/);
  const own = join(dir, 'own.yaml');
  writeFileSync(own, text.replace(/\n {6}- source: users[^\n]*\n {8}replica: true/, ''));
  const plan = await run('plan', '--coupling', '--config', own);
  expect(plan.code, plan.stderr).toBe(0);
  expect(plan.stdout).toMatch(/invoices\.user_id → users: invoices reads users \(auth\) but keeps no copy of it/);
  const bad = await run('init', '--legacy-database', legacyUrl, '--prefixes', '/API/Auth/');
  expect(bad.code).toBe(2);
});
