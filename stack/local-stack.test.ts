import { execFileSync, spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { Redis } from 'ioredis';
import { resolveConfig } from '../core/config/load.ts';
import { LocalStack } from './local-stack.ts';
import { isListening, waitFor } from './ports.ts';

const ROOT = resolve(import.meta.dirname, '..');

async function query(url: string, sql: string): Promise<any[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(sql)).rows;
  } finally {
    await client.end();
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('the local stack harness', () => {
  let stack: LocalStack;

  beforeAll(async () => {
    stack = await LocalStack.start({ postgres: { ephemeral: true } });
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('runs PostgreSQL with logical WAL and room for at least 20 slots and senders', async () => {
    const rows = await query(stack.postgres.url(), `SELECT name, setting FROM pg_settings WHERE name IN ('wal_level','max_replication_slots','max_wal_senders')`);
    const settings = Object.fromEntries(rows.map((r) => [r.name, r.setting]));
    expect(settings.wal_level).toBe('logical');
    expect(Number(settings.max_replication_slots)).toBeGreaterThanOrEqual(20);
    expect(Number(settings.max_wal_senders)).toBeGreaterThanOrEqual(20);
  });

  it('creates the legacy, control and every service database of strangler.yaml', async () => {
    const config = resolveConfig({ services: [{ name: 'auth', prefix: '/api/auth', port: 5002, database: 'svc_auth', order: 1 }] }, stack.overrides);
    const names = await stack.createDatabases(config);
    expect(names.sort()).toEqual(['legacy', 'strangler_control', 'svc_auth']);
    const rows = await query(stack.postgres.url(), `SELECT datname FROM pg_database`);
    expect(rows.map((r) => r.datname)).toEqual(expect.arrayContaining(names));
    await stack.createDatabases(config); // idempotent
  });

  it('survives a SIGKILL of PostgreSQL and a restart, keeping its data', async () => {
    await query(stack.postgres.url(), 'CREATE TABLE IF NOT EXISTS kept (id int primary key)');
    await query(stack.postgres.url(), 'INSERT INTO kept VALUES (1) ON CONFLICT DO NOTHING');
    await stack.postgres.kill();
    expect(await isListening(stack.postgres.port)).toBe(false);
    await stack.postgres.restart();
    expect(await query(stack.postgres.url(), 'SELECT id FROM kept')).toEqual([{ id: 1 }]);
  });

  it('stops and restarts Redis on demand', async () => {
    await stack.redis!.stop();
    expect(await isListening(stack.redis!.port)).toBe(false);
    await stack.redis!.restart();
    const redis = new Redis(stack.redisUrl);
    expect(await redis.ping()).toBe('PONG');
    redis.disconnect();
  });
});

describe('no process left behind', () => {
  it('stops PostgreSQL and Redis when the process that started them is SIGKILLed', async () => {
    const script = `
      import { LocalStack } from ${JSON.stringify(resolve(ROOT, 'stack/local-stack.ts'))};
      const s = await LocalStack.start({ postgres: { ephemeral: true } });
      const fs = await import('node:fs');
      const pg = fs.readFileSync(s.postgres.dataDir + '/postmaster.pid', 'utf8').split('\\n')[0];
      console.log(JSON.stringify({ pg: Number(pg), redisPort: s.redis.port, pgPort: s.postgres.port }));
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    const info = await new Promise<{ pg: number; redisPort: number; pgPort: number }>((ok, fail) => {
      let out = '';
      child.stdout!.on('data', (c) => {
        out += c;
        const line = out.split('\n').find((l) => l.startsWith('{'));
        if (line) ok(JSON.parse(line));
      });
      child.once('exit', (code) => fail(new Error(`child exited ${code}`)));
    });
    expect(processAlive(info.pg)).toBe(true);
    child.kill('SIGKILL');
    await waitFor('postgres to be reaped', async () => !processAlive(info.pg), 20_000, 200);
    await waitFor('redis to be reaped', async () => !(await isListening(info.redisPort)), 20_000, 200);
    expect(await isListening(info.pgPort)).toBe(false);
  });

  it('finds the PostgreSQL binaries it runs', () => {
    expect(execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim()).not.toBe('');
  });
});
