import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisServer } from '../stack/redis-server.ts';
import { waitFor } from '../stack/ports.ts';
import { adminHeaders, createTestDatabase, dropTestDatabase, gatewayTestEnv } from '../test/harness.ts';
import { routeWriter } from '../test/routes.ts';
import { migrateControl } from '../migrations/control/index.ts';
import { snapshotTable } from './route-state.ts';
import type { RouteTable } from './route-types.ts';
import { startGateway, type RunningGateway } from './start.ts';

let env: Awaited<ReturnType<typeof gatewayTestEnv>>;
let routes: ReturnType<typeof routeWriter>;
const running: RunningGateway[] = [];

async function gateway(config = env.config, id?: string): Promise<RunningGateway> {
  const g = await startGateway(config, { port: 0, instanceId: id });
  running.push(g);
  return g;
}

const token = (sub: string) =>
  new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setIssuer('legacy').setExpirationTime('1h').sign(new TextEncoder().encode(env.config.legacy.jwtSecret));

async function server(g: RunningGateway, path = '/api/invoices/x'): Promise<string> {
  const res = await fetch(`${g.url}${path}`, { headers: { authorization: `Bearer ${await token('1')}` } });
  return ((await res.json()) as { server: string }).server;
}

beforeAll(async () => {
  env = await gatewayTestEnv('gateway_state');
  routes = routeWriter(env.config);
});

afterAll(async () => {
  for (const g of running) await g.stop();
  await routes?.close();
  await env?.cleanup();
});

describe('live route state', () => {
  it('two gateway instances converge on a new version within 1 s and both acknowledge it', async () => {
    const a = await gateway(env.config, 'gw-a');
    const b = await gateway(env.config, 'gw-b');
    const p = await routes.set({ prefix: '/api/invoices', mode: 'service' });
    expect(p).toMatchObject({ complete: true, acknowledged: 2, live: 2 });
    expect(p.ms).toBeLessThan(1_000);
    expect(await server(a)).toBe('invoices');
    expect(await server(b)).toBe('invoices');
    expect(a.routes.current().version).toBe(p.version);
    const back = await routes.set({ prefix: '/api/invoices', mode: 'legacy' });
    expect(back.acknowledged).toBe(2);
    expect(await server(a)).toBe('legacy');
    await a.stop();
    await b.stop();
  });

  it('loses no request while the route flips back and forth under load', async () => {
    const g = await gateway(env.config, 'gw-load');
    const t = await token('9');
    let stop = false;
    const results: number[] = [];
    const served = new Set<string>();
    const worker = async () => {
      while (!stop) {
        const res = await fetch(`${g.url}/api/invoices/delay/5`, { headers: { authorization: `Bearer ${t}` } });
        results.push(res.status);
        served.add(((await res.json()) as { server: string }).server);
      }
    };
    const workers = Array.from({ length: 16 }, worker);
    for (let i = 0; i < 6; i++) {
      await routes.set({ prefix: '/api/invoices', mode: i % 2 === 0 ? 'service' : 'legacy' });
      await new Promise((r) => setTimeout(r, 50));
    }
    stop = true;
    await Promise.all(workers);
    expect(results.length).toBeGreaterThan(50);
    expect(results.filter((s) => s !== 200)).toEqual([]);
    expect(served).toEqual(new Set(['legacy', 'invoices']));
    await g.stop();
  });

  it('catches up by polling when a notification is lost', async () => {
    const g = await gateway(env.config, 'gw-poll');
    const client = new pg.Client({ connectionString: env.config.control.databaseUrl });
    await client.connect();
    const { commitRouteChange } = await import('../cutover/route-change.ts');
    const { version } = await commitRouteChange(client, env.config.control.schema, [{ prefix: '/api/invoices', service: 'invoices', mode: 'service', weight: 0 }], { actor: 'test', command: 'test', outcome: 'applied' });
    await client.end();
    // No publish: only the poll (every 200 ms here) can bring the new version.
    await waitFor('the poll to apply the version', async () => g.routes.current().version === version, 3_000, 20);
    expect(await server(g)).toBe('invoices');
    await routes.set({ prefix: '/api/invoices', mode: 'legacy' });
    await g.stop();
  });

  it('boots from its snapshot when the control database is down, says degraded, and recovers', async () => {
    const g = await gateway(env.config, 'gw-snap');
    await routes.set({ prefix: '/api/invoices', mode: 'service' });
    await g.stop();
    const snapshot = JSON.parse(readFileSync(env.config.gateway.snapshotFile, 'utf8'));
    expect(snapshot.routes).toContainEqual({ prefix: '/api/invoices', service: 'invoices', mode: 'service', weight: 0, fenced: false });

    const unreachable = { ...env.config, control: { ...env.config.control, databaseUrl: 'postgres://postgres@127.0.0.1:1/nowhere' } };
    const d = await gateway(unreachable, 'gw-degraded');
    expect(d.routes.degraded).toBe(true);
    expect(await server(d)).toBe('invoices');
    const ready = await fetch(`${d.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ routeTable: { degraded: true }, controlDatabase: 'unreachable', status: expect.stringMatching(/degraded/) });
    await d.stop();
    await routes.set({ prefix: '/api/invoices', mode: 'legacy' });
  });

  it('reads a snapshot from before canary hashes were recorded with fnv1a for its canaries; a recorded hash is kept', async () => {
    const g = await gateway(env.config, 'gw-snap-hash');
    await routes.set({ prefix: '/api/invoices', mode: 'canary', weight: 20 });
    await g.stop();
    const written = JSON.parse(readFileSync(env.config.gateway.snapshotFile, 'utf8')) as RouteTable;
    expect(written.routes).toContainEqual(expect.objectContaining({ prefix: '/api/invoices', mode: 'canary', canaryHash: 'xxh32' }));
    expect(snapshotTable(written).routes).toEqual(written.routes);
    const old = { version: 3, routes: [{ prefix: '/api/invoices', service: 'invoices', mode: 'canary' as const, weight: 20 }, { prefix: '/api/ocr', service: 'ocr', mode: 'service' as const, weight: 0 }] };
    expect(snapshotTable(old).routes).toEqual([{ ...old.routes[0], canaryHash: 'fnv1a' }, old.routes[1]]);
    // A gateway booting from such a file while the control database is down buckets that canary by fnv1a.
    writeFileSync(env.config.gateway.snapshotFile, JSON.stringify(old));
    const unreachable = { ...env.config, control: { ...env.config.control, databaseUrl: 'postgres://postgres@127.0.0.1:1/nowhere' } };
    const d = await gateway(unreachable, 'gw-snap-old');
    expect(d.routes.degraded).toBe(true);
    expect(d.routes.current().routes.find((r) => r.prefix === '/api/invoices')?.canaryHash).toBe('fnv1a');
    await d.stop();
    await routes.set({ prefix: '/api/invoices', mode: 'legacy' });
  });

  it('refuses to serve (503) with no control database and no snapshot, rather than guess routes', async () => {
    const unreachable = {
      ...env.config,
      control: { ...env.config.control, databaseUrl: 'postgres://postgres@127.0.0.1:1/nowhere' },
      gateway: { ...env.config.gateway, snapshotFile: join(env.dir, 'missing', 'none.json') },
    };
    const g = await gateway(unreachable, 'gw-blind');
    expect(existsSync(unreachable.gateway.snapshotFile)).toBe(false);
    const res = await fetch(`${g.url}/api/invoices`);
    expect(res.status).toBe(503);
    expect((await fetch(`${g.url}/readyz`)).status).toBe(503);
    await g.stop();
  });

  it('keeps serving its last table while the control database is gone', async () => {
    const controlUrl = await createTestDatabase('gw_control_drop');
    await migrateControl(controlUrl, env.config.control.schema);
    const config = { ...env.config, control: { ...env.config.control, databaseUrl: controlUrl }, gateway: { ...env.config.gateway, snapshotFile: join(env.dir, 'drop.json') } };
    const w = routeWriter(config);
    const g = await gateway(config, 'gw-drop');
    await w.set({ prefix: '/api/invoices', mode: 'service' });
    await dropTestDatabase(controlUrl);
    await new Promise((r) => setTimeout(r, 500)); // a few failed polls
    expect(await server(g)).toBe('invoices');
    expect(((await (await fetch(`${g.url}/readyz`)).json()) as any).controlDatabase).toBe('unreachable');
    await w.close();
    await g.stop();
  });
});

describe('fence leases', () => {
  it('lifts a write hold whose lease ran out with no new version (its owner was killed), releasing held writes to the route it kept', async () => {
    // Writes would be held far longer than the lease: only the lease can release them.
    const g = await gateway({ ...env.config, gateway: { ...env.config.gateway, fenceHoldMs: 30_000 } }, 'gw-lease');
    const fenced = await routes.setWith({ fenceLeaseMs: 1_500 }, { prefix: '/api/invoices', mode: 'legacy', fenced: true });
    expect(fenced.complete).toBe(true);
    expect(g.routes.current().routes.find((r) => r.prefix === '/api/invoices')).toMatchObject({ fenced: true });
    const write = await fetch(`${g.url}/api/invoices/x`, { method: 'POST', headers: { authorization: `Bearer ${await token('1')}`, 'content-type': 'application/json' }, body: '{}' });
    expect(write.status).toBe(200);
    expect(((await write.json()) as { server: string }).server).toBe('legacy');
    // The same version, without the fence: nobody committed anything.
    expect(g.routes.current().version).toBe(fenced.version);
    expect(g.routes.current().routes.find((r) => r.prefix === '/api/invoices')?.fenced).toBe(false);
    await routes.set({ prefix: '/api/invoices', mode: 'legacy' });
    await g.stop();
  });

  it('loads a fence whose lease has already run out as lifted (a gateway started after its owner died)', async () => {
    await routes.setWith({ fenceLeaseMs: 1_000 }, { prefix: '/api/invoices', mode: 'legacy', fenced: true });
    const client = new pg.Client({ connectionString: env.config.control.databaseUrl });
    await client.connect();
    await waitFor('the lease to run out', async () => (await client.query(`SELECT fence_expires_at < now() AS lapsed FROM "${env.config.control.schema}".routes WHERE prefix = '/api/invoices'`)).rows[0].lapsed, 5_000, 50);
    await client.end();
    const g = await gateway(env.config, 'gw-late');
    expect(g.routes.current().routes.find((r) => r.prefix === '/api/invoices')?.fenced).toBe(false);
    await routes.set({ prefix: '/api/invoices', mode: 'legacy' });
    await g.stop();
  });
});

describe('Redis outages and shared limits', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await RedisServer.start();
  });
  afterAll(async () => {
    await redis?.destroy?.();
  });

  it('keeps serving its last table while Redis is down, and picks up changes by polling', async () => {
    const config = { ...env.config, redis: { ...env.config.redis, url: redis.url } };
    const w = routeWriter(config);
    const g = await gateway(config, 'gw-redis');
    await w.set({ prefix: '/api/invoices', mode: 'service' });
    await w.close();
    await redis.stop();
    expect(await server(g)).toBe('invoices');
    expect(await server(g, '/health')).toBe('legacy');
    const client = new pg.Client({ connectionString: config.control.databaseUrl });
    await client.connect();
    const { commitRouteChange } = await import('../cutover/route-change.ts');
    const { version } = await commitRouteChange(client, config.control.schema, [{ prefix: '/api/invoices', service: 'invoices', mode: 'legacy', weight: 0 }], { actor: 'test', command: 'test', outcome: 'applied' });
    await client.end();
    await waitFor('the poll to apply the version without Redis', async () => g.routes.current().version === version, 3_000, 20);
    expect(await server(g)).toBe('legacy');
    // Still ready (it serves), and says why it is degraded: every gateway shares this Redis, and a
    // load balancer taking them all out would turn a Redis outage into a full one.
    const down = await fetch(`${g.url}/readyz`);
    expect(down.status).toBe(200);
    expect(await down.json()).toMatchObject({ ready: true, redis: 'unavailable', degraded: [expect.stringMatching(/Redis/)], status: expect.stringMatching(/^degraded: .*Redis/) });
    await redis.restart();
    await waitFor('not degraded again', async () => ((await (await fetch(`${g.url}/readyz`)).json()) as { degraded: string[] }).degraded.length === 0, 10_000, 100);
    await g.stop();
  });

  it('goes on limiting each gateway alone while Redis is down (not open, not closed)', async () => {
    const config = { ...env.config, redis: { ...env.config.redis, url: redis.url }, gateway: { ...env.config.gateway, rateLimits: [{ prefix: '/api/invoices', limit: 3, windowMs: 60_000 }] } };
    const g = await gateway(config, 'gw-rl-down');
    await redis.stop();
    try {
      const t = await token('outage-user');
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) statuses.push((await fetch(`${g.url}/api/invoices`, { headers: { authorization: `Bearer ${t}` } })).status);
      expect(statuses).toEqual([200, 200, 200, 429, 429]);
      // Decided on this gateway's count without a round trip to the Redis it knows is down.
      expect(await (await fetch(`${g.url}/metrics`, { headers: adminHeaders })).text()).toMatch(/strangler_gateway_redis_unavailable_total\{what="rate-limit"\} [1-9]/);
    } finally {
      await redis.restart();
      await g.stop();
    }
  });

  it('applies one rate limit across two gateway instances, per user, with RateLimit headers and Retry-After', async () => {
    // A command deadline no busy test machine reaches: a Redis taken as down makes each gateway
    // count alone (the test before this one), which is not what this one checks.
    const config = { ...env.config, redis: { ...env.config.redis, commandTimeoutMs: 5_000 }, gateway: { ...env.config.gateway, rateLimits: [{ prefix: '/api/invoices', limit: 5, windowMs: 60_000 }] } };
    const a = await gateway(config, 'rl-a');
    const b = await gateway(config, 'rl-b');
    for (const g of [a, b]) await waitFor(`${g.url} to reach Redis`, async () => ((await (await fetch(`${g.url}/readyz`)).json()) as { degraded: string[] }).degraded.length === 0, 10_000, 50);
    // Windows are fixed (multiples of a minute): the seven requests go in one.
    const toWindowEnd = 60_000 - (Date.now() % 60_000);
    if (toWindowEnd < 5_000) await new Promise((r) => setTimeout(r, toWindowEnd + 50));
    const t = await token('rate-user');
    const statuses: number[] = [];
    let last: Response | undefined;
    for (let i = 0; i < 7; i++) {
      last = await fetch(`${(i % 2 ? a : b).url}/api/invoices`, { headers: { authorization: `Bearer ${t}` } });
      statuses.push(last.status);
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429]);
    expect(last!.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(last!.headers.get('ratelimit-policy')).toBe('5;w=60');
    expect(((await last!.json()) as any).error.code).toBe('RATE_LIMITED');
    const other = await fetch(`${a.url}/api/invoices`, { headers: { authorization: `Bearer ${await token('someone-else')}` } });
    expect(other.status).toBe(200);
    expect(other.headers.get('ratelimit-remaining')).toBe('4');
    await a.stop();
    await b.stop();
  });

  it('counts far from the limit in memory and shares it in batches, and counts exactly near it', async () => {
    const rateLimits = [{ prefix: '/api/invoices', limit: 20, windowMs: 60_000 }];
    const config = { ...env.config, gateway: { ...env.config.gateway, rateLimits, rateLimitSync: { intervalMs: 100, exactWithin: 12 } } };
    const a = await gateway(config, 'rlb-a');
    const b = await gateway(config, 'rlb-b');
    const t = await token(`batch-user-${Date.now()}`);
    const hit = async (g: RunningGateway) => {
      const res = await fetch(`${g.url}/api/invoices`, { headers: { authorization: `Bearer ${t}` } });
      await res.arrayBuffer();
      return { status: res.status, remaining: Number(res.headers.get('ratelimit-remaining') ?? -1) };
    };
    try {
      const first = await hit(a); // a new key: asked exactly (nothing known yet)
      expect(first.remaining).toBe(19);
      for (let i = 0; i < 7; i++) await hit(a); // counted in memory
      await new Promise((r) => setTimeout(r, 150)); // one flush: Redis holds 8
      const shared = Number(await routes.redis.get(`${routes.keys.rateLimit('/api/invoices')}${Math.floor(Date.now() / 60_000)}:user:${(await import('jose')).decodeJwt(t).sub}`));
      expect(shared).toBe(8);
      expect((await hit(b)).remaining).toBe(11); // b's first hit is exact: it sees a's 8
      // Within the last 12 below the limit every hit is exact: 11 more fit, whoever serves them, then 429.
      const statuses: number[] = [];
      for (let i = 0; i < 13; i++) statuses.push((await hit(i % 2 ? a : b)).status);
      expect(statuses.filter((s) => s === 200)).toHaveLength(11);
      expect(statuses.slice(11)).toEqual([429, 429]);
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});
