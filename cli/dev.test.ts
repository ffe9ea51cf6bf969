import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { freePort, isListening } from '../stack/ports.ts';
import { sharedStack } from '../test/harness.ts';
import { looksGenerated } from '../test/secret-scan.ts';

const ROOT = resolve(import.meta.dirname, '..');
const folders: string[] = [];

/** A folder of its own for each stack (its .strangler/dev-stack.json), with this strangler.yaml. */
function folder(config: unknown): { cwd: string; config: string[] } {
  const cwd = mkdtempSync(join(tmpdir(), 'dev-up-'));
  folders.push(cwd);
  writeFileSync(join(cwd, 'strangler.yaml'), stringify(config));
  return { cwd, config: ['--config', join(cwd, 'strangler.yaml')] };
}

async function run(cwd: string, args: string[], env: NodeJS.ProcessEnv = {}, bin = 'bin/strangler.js') {
  try {
    const merged: NodeJS.ProcessEnv = { ...process.env, ...env };
    for (const [k, v] of Object.entries(env)) if (v === '') delete merged[k];
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [resolve(ROOT, bin), ...args], { cwd, env: merged, timeout: 280_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

afterAll(async () => {
  for (const cwd of folders) await run(cwd, ['dev', 'down', '--config', join(cwd, 'strangler.yaml')]);
});

/** A monolith of the engineer's own, as dev.processes runs it: any command; this one answers on $PORT, and has no /health (404). */
const OWN_MONOLITH = `node -e "require('http').createServer((q, s) => { if (q.url === '/health') s.statusCode = 404; s.end(JSON.stringify({ path: q.url, db: process.env.DATABASE_URL })); }).listen(process.env.PORT, '127.0.0.1')"`;

async function ownMonolithConfig() {
  const port = await freePort();
  const gatewayPort = await freePort();
  return {
    port,
    gatewayPort,
    doc: {
      legacy: { port, database: 'shop', healthCheck: { path: '/' } },
      control: { database: 'shop_control' },
      gateway: { port: gatewayPort, snapshotFile: 'routes.json' },
      services: [{ name: 'orders', prefix: '/api/orders', port: await freePort(), database: 'shop_orders', order: 1 }],
      dev: {
        setup: ['echo "$STRANGLER_LEGACY_DATABASE_URL" > setup-ran.txt'],
        processes: [{ name: 'shop', command: OWN_MONOLITH, port, health: '/', env: { DATABASE_URL: '${STRANGLER_LEGACY_DATABASE_URL}' } }],
      },
    },
  };
}

describe('strangler dev', () => {
  it('dev up --detach runs the reference example of strangler.yaml (dev.setup, dev.processes, the gateway); status, the example\'s seed and down work on it', async () => {
    // Every port free (never the 5000-5007 of a demo that may be running).
    const port = await freePort();
    const gatewayPort = await freePort();
    const doc = parse(readFileSync(resolve(ROOT, 'strangler.yaml'), 'utf8'));
    doc.legacy.port = port;
    doc.gateway = { ...doc.gateway, port: gatewayPort, snapshotFile: 'routes.json' };
    for (const s of doc.services) s.port = await freePort();
    // The shipped processes, on these ports, run from the repository.
    doc.dev.cwd = ROOT;
    doc.dev.setup = ['node examples/reference/bin.js seed --users 5 --invoices 20'];
    for (const p of doc.dev.processes) p.port = p.name === 'legacy' ? port : doc.services.find((s: { name: string }) => s.name === p.name).port;
    const { cwd, config } = folder(doc);
    const env = { REDIS_URL: sharedStack().redisUrl };

    const up = await run(cwd, ['dev', 'up', '--detach', ...config], env);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stdout).toMatch(/postgres\s+postgres:\/\/postgres@127\.0\.0\.1:\d+/);
    expect(up.stdout).toMatch(new RegExp(`legacy\\s+http://127\\.0\\.0\\.1:${port}`));
    expect(up.stdout).toMatch(new RegExp(`gateway\\s+http://127\\.0\\.0\\.1:${gatewayPort}`));
    for (const s of doc.services) expect(up.stdout).toMatch(new RegExp(`${s.name}\\s+http://127\\.0\\.0\\.1:${s.port}`));
    expect(existsSync(join(cwd, '.strangler/dev-stack.json'))).toBe(true);
    expect(existsSync(join(cwd, '.strangler/logs/legacy.log'))).toBe(true);

    const twice = await run(cwd, ['dev', 'up', '--detach', ...config], env);
    expect(twice.code).toBe(2);
    expect(twice.stderr).toMatch(/already running/);

    const status = await run(cwd, ['dev', 'status', '--json', ...config], env);
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout).health.legacy).toBe('healthy');

    // Its own secrets, generated for it: in its state (owner only), never printed, used by the gateway.
    const stateFile = join(cwd, '.strangler/dev-stack.json');
    const { secrets } = JSON.parse(readFileSync(stateFile, 'utf8')) as { secrets: Record<string, string> };
    expect(statSync(stateFile).mode & 0o777).toBe(0o600);
    expect(looksGenerated(secrets.legacyJwtSecret) && looksGenerated(secrets.adminToken)).toBe(true);
    expect(`${up.stdout}${status.stdout}`).not.toContain(secrets.legacyJwtSecret);
    expect((await fetch(`http://127.0.0.1:${gatewayPort}/metrics`, { headers: { authorization: `Bearer ${secrets.adminToken}` } })).status).toBe(200);

    // dev.setup seeded 5 users; the example's own command line finds the stack in this folder and adds more.
    const seed = await run(cwd, ['seed', '--users', '8', '--invoices', '3', ...config], env, 'examples/reference/bin.js');
    expect(seed.code, seed.stderr).toBe(0);
    const login = await fetch(`http://127.0.0.1:${gatewayPort}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'user7@example.test', password: 'password-7' }),
    });
    expect(login.status).toBe(200);

    const down = await run(cwd, ['dev', 'down', ...config], env);
    expect(down.code).toBe(0);
    expect(down.stdout).toMatch(/stopped the dev stack/);
    for (const p of [port, gatewayPort, ...doc.services.map((s: { port: number }) => s.port)]) expect(await isListening(p), `port ${p}`).toBe(false);
    const after = await run(cwd, ['dev', 'status', ...config], env);
    expect(after.code).toBe(1);
  }, 420_000);

  it('dev up runs a monolith of any language from dev.processes (with the stack in its environment), and dev down stops it all although Redis was SIGKILLed', async () => {
    const { port, gatewayPort, doc } = await ownMonolithConfig();
    const { cwd, config } = folder(doc);
    // Its own Redis this time (no REDIS_URL), to kill.
    const up = await run(cwd, ['dev', 'up', '--detach', '--json', ...config], { REDIS_URL: '' });
    expect(up.code, up.stderr).toBe(0);
    const state = JSON.parse(up.stdout) as { postgresUrl: string; redisUrl: string; components: Record<string, string>; pids: Record<string, number> };
    expect(state.components.shop).toBe(`http://127.0.0.1:${port}`);
    // The setup command ran, before the process, with the stack's values.
    expect(readFileSync(join(cwd, 'setup-ran.txt'), 'utf8').trim()).toBe(`${state.postgresUrl}/shop`);
    // Through the gateway, to the engineer's own monolith, which got its database from ${STRANGLER_LEGACY_DATABASE_URL}.
    const res = await fetch(`http://127.0.0.1:${gatewayPort}/anything`);
    expect(await res.json()).toEqual({ path: '/anything', db: `${state.postgresUrl}/shop` });
    // Status asks each part on its own health path (the monolith's `/`, the gateway's /healthz), not a /health it does not have.
    const status = await run(cwd, ['dev', 'status', '--json', ...config], { REDIS_URL: '' });
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout).health).toEqual({ postgres: 'running', redis: 'running', shop: 'healthy', gateway: 'healthy' });

    process.kill(state.pids.redis, 'SIGKILL');
    const redisPort = Number(new URL(state.redisUrl).port);
    const postgresPort = Number(new URL(state.postgresUrl).port);
    const down = await run(cwd, ['dev', 'down', ...config], { REDIS_URL: '' });
    expect(down.code, down.stderr).toBe(0);
    for (const p of [port, gatewayPort, redisPort, postgresPort]) expect(await isListening(p), `port ${p}`).toBe(false);
    expect(existsSync(join(cwd, '.strangler/dev-stack.json'))).toBe(false);
  }, 180_000);

  it('dev up --infra-only starts Postgres (wal_level=logical) and Redis alone, creates the databases strangler.yaml names, prints the lines to export', async () => {
    const { port, gatewayPort, doc } = await ownMonolithConfig();
    // Would fail dev up if it were started.
    doc.dev.processes[0].command = 'exit 3';
    const { cwd, config } = folder(doc);
    const up = await run(cwd, ['dev', 'up', '--infra-only', '--detach', ...config], { REDIS_URL: '' });
    expect(up.code, up.stderr).toBe(0);
    const postgres = up.stdout.match(/export STRANGLER_POSTGRES_URL='(postgres:\/\/[^']+)'/)?.[1];
    expect(postgres, up.stdout).toBeDefined();
    expect(up.stdout).toMatch(/export REDIS_URL='redis:\/\/127\.0\.0\.1:\d+'/);
    expect(up.stdout).toContain(`export STRANGLER_LEGACY_DATABASE_URL='${postgres}/shop'`);
    expect(up.stdout).toContain(`export STRANGLER_ORDERS_DATABASE_URL='${postgres}/shop_orders'`);
    expect(await isListening(port)).toBe(false);
    expect(await isListening(gatewayPort)).toBe(false);
    expect(existsSync(join(cwd, 'setup-ran.txt'))).toBe(false);

    const client = new pg.Client({ connectionString: `${postgres}/postgres` });
    await client.connect();
    try {
      expect((await client.query(`SHOW wal_level`)).rows[0].wal_level).toBe('logical');
      const names = (await client.query(`SELECT datname FROM pg_database`)).rows.map((r) => r.datname);
      expect(names).toEqual(expect.arrayContaining(['shop', 'shop_control', 'shop_orders']));
    } finally {
      await client.end();
    }
    // The CLI in this folder uses it.
    const init = await run(cwd, ['control', 'init', ...config], { REDIS_URL: '' });
    expect(init.code, init.stderr).toBe(0);
    expect((await run(cwd, ['dev', 'down', ...config], { REDIS_URL: '' })).code).toBe(0);
  }, 120_000);

  it('dev --help says what up starts', async () => {
    const help = await run(ROOT, ['dev', '--help']);
    expect(help.stdout.replace(/\s+/g, ' ')).toMatch(/private PostgreSQL \(wal_level=logical\) and Redis.*dev\.setup.*dev\.processes.*gateway.*--infra-only/);
  });
});
