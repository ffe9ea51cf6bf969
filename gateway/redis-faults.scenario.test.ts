import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { ResolvedConfig } from '../core/config/load.ts';
import { silentLogger } from '../core/logger.ts';
import { registerInstance, type InstanceRegistration } from '../sdk/registration.ts';
import { RedisServer } from '../stack/redis-server.ts';
import { freePort, waitFor } from '../stack/ports.ts';
import { adminHeaders, configYaml, gatewayTestEnv, ROOT } from '../test/harness.ts';
import { routeWriter } from '../test/routes.ts';
import { readRouteFigures } from './metrics.ts';
import { redisKeys } from './redis-keys.ts';

/**
 * Issue 19: a frozen Redis (SIGSTOP: it keeps accepting connections and never answers) stopped
 * all traffic through the gateway, legacy routes included, while /readyz said ready.
 *
 * Here a gateway process (the real `strangler gateway`) on a private redis-server serves steady
 * load on three routes (legacy, canary 50 %, service) to real HTTP upstreams; 40 users, so most
 * rate-limit keys are idle long enough that their next hit is counted in Redis before the request
 * goes on (the path that hung). The service's instance registers itself in that Redis (its entry
 * lapses during the outage). Redis is frozen for 30 s, then resumed; later killed and restarted.
 */
const OUTAGE_MS = 30_000;
/** Far below the outage: a request that took this long waited on Redis. */
const HUNG_MS = 10_000;

let env: Awaited<ReturnType<typeof gatewayTestEnv>>;
let redis: RedisServer;
let config: ResolvedConfig;
let gateway: ChildProcess;
let gatewayUrl: string;
let stderr = '';
let registration: InstanceRegistration | undefined;
const tokens: string[] = [];

interface Sample {
  route: string;
  at: number;
  ms: number;
  status: number;
  error?: string;
}

const ROUTES = { legacy: '/api/auth/me', canary: '/api/invoices', service: '/api/templates' } as const;

/**
 * Steady load: `perRoute` closed-loop clients per route, each pausing 20 ms between requests
 * (about 200 requests a second: enough to show that none waits, without starving the tests that
 * run beside this one on a 2-core machine).
 */
function startLoad(perRoute: number) {
  const samples: Sample[] = [];
  let stop = false;
  let n = 0;
  const client = async (route: keyof typeof ROUTES) => {
    while (!stop) {
      const token = tokens[n++ % tokens.length];
      const at = Date.now();
      try {
        const res = await fetch(`${gatewayUrl}${ROUTES[route]}`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(HUNG_MS) });
        await res.arrayBuffer();
        samples.push({ route, at, ms: Date.now() - at, status: res.status });
      } catch (err) {
        samples.push({ route, at, ms: Date.now() - at, status: 0, error: (err as Error).name });
      }
      await new Promise((r) => setTimeout(r, 20)); // pacing: about 50 requests/s per route
    }
  };
  const running = (Object.keys(ROUTES) as Array<keyof typeof ROUTES>).flatMap((route) => Array.from({ length: perRoute }, () => client(route)));
  return {
    samples,
    async stop() {
      stop = true;
      await Promise.all(running);
    },
  };
}

function percentile(values: number[], q: number): number {
  if (!values.length) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

/** Per route: requests, failures (anything but 200), p50/p99/max ms, for samples started in [from, to). */
function figures(samples: Sample[], from: number, to: number) {
  const out: Record<string, { requests: number; failed: number; p50: number; p99: number; max: number }> = {};
  for (const route of Object.keys(ROUTES)) {
    const s = samples.filter((x) => x.route === route && x.at >= from && x.at < to);
    const ms = s.map((x) => x.ms);
    out[route] = { requests: s.length, failed: s.filter((x) => x.status !== 200).length, p50: percentile(ms, 0.5), p99: percentile(ms, 0.99), max: Math.max(0, ...ms) };
  }
  return out;
}

const readyz = async () => (await fetch(`${gatewayUrl}/readyz`, { signal: AbortSignal.timeout(2_000) })).json() as Promise<{ ready: boolean; status: string; degraded: string[]; redis: string }>;
const metricsText = async () => (await fetch(`${gatewayUrl}/metrics`, { headers: adminHeaders, signal: AbortSignal.timeout(2_000) })).text();

beforeAll(async () => {
  redis = await RedisServer.start();
  env = await gatewayTestEnv('redis_faults', ['auth', 'invoices', 'templates']);
  config = {
    ...env.config,
    redis: { ...env.config.redis, url: redis.url },
    // The default rate limit, shared through Redis as shipped (every idle key asks Redis).
    gateway: { ...env.config.gateway, rateLimits: [{ prefix: '/', limit: 100_000, windowMs: 60_000 }] },
    // templates' instance registers itself in Redis (the service kit's registration), as the demo's invoices do.
    services: env.config.services.map((s) => (s.name === 'templates' ? { ...s, discovery: 'registry' as const, instances: [] } : s)),
  };
  registration = await registerInstance(config, config.services.find((s) => s.name === 'templates')!, env.upstreams.templates.url, {}, silentLogger);
  const routes = routeWriter(config);
  await routes.set({ prefix: '/api/auth', mode: 'legacy' }, { prefix: '/api/invoices', mode: 'canary', weight: 50 }, { prefix: '/api/templates', mode: 'service' });
  await routes.close();
  const port = await freePort();
  const file = join(env.dir, 'strangler.yaml');
  writeFileSync(file, stringify({ ...configYaml(config), gateway: { ...config.gateway, port } }));
  gateway = spawn(process.execPath, [resolve(ROOT, 'bin/strangler.js'), 'gateway', '--config', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  gateway.stderr!.on('data', (c) => (stderr += c));
  gatewayUrl = `http://127.0.0.1:${port}`;
  // Generous: a loaded machine takes a while to start a tsx process.
  await waitFor('the gateway to listen', async () => /listening on/.test(stderr), 90_000, 50);
  for (let u = 1; u <= 40; u++) {
    tokens.push(await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(`load-${u}`).setIssuer(config.legacy.jwtIssuer!).setExpirationTime('1h').sign(new TextEncoder().encode(config.legacy.jwtSecret)));
  }
  await waitFor('the gateway to route to the registered templates instance', async () => {
    const res = await fetch(`${gatewayUrl}${ROUTES.service}`, { headers: { authorization: `Bearer ${tokens[0]}` } });
    return ((await res.json()) as { server?: string }).server === 'templates';
  }, 20_000, 100);
}, 180_000);

afterAll(async () => {
  await registration?.leave();
  if (gateway && gateway.exitCode === null) {
    gateway.kill('SIGTERM');
    await new Promise((r) => gateway.once('exit', r));
  }
  await redis?.destroy();
  await env?.cleanup();
});

describe('the gateway when Redis hangs or dies', () => {
  it('serves every route without a failed request while Redis is frozen for 30 s, says degraded on /readyz, and recovers by itself', async () => {
    const load = startLoad(2);
    let outage = { from: 0, to: 0 };
    let degradedSeen: Awaited<ReturnType<typeof readyz>> | null = null;
    let recoveredMs = -1;
    let baselineFrom = 0;
    try {
      await waitFor('load on every route', async () => Object.values(figures(load.samples, 0, Infinity)).every((f) => f.requests > 20), 15_000, 50);
      expect((await readyz()).ready).toBe(true);
      // A steady-state window to compare the outage with.
      baselineFrom = Date.now();
      // Time is the measure here: five seconds of steady traffic as the baseline of latency.
      await new Promise((r) => setTimeout(r, 5_000));
      outage = { from: Date.now(), to: 0 };
      redis.pause();
      try {
        // /readyz is asked throughout; the outage lasts its full 30 s whatever it says.
        while (Date.now() < outage.from + OUTAGE_MS) {
          const r = await readyz();
          if (!degradedSeen && r.degraded?.some((x) => /redis/i.test(x))) degradedSeen = r;
          await new Promise((ok) => setTimeout(ok, 200));
        }
      } finally {
        redis.resume();
        outage.to = Date.now();
      }
      await waitFor('/readyz to say ready again', async () => {
        const r = await readyz();
        return r.ready && r.degraded?.length === 0;
      }, 10_000, 100).then(() => (recoveredMs = Date.now() - outage.to), () => undefined);
      // A second of traffic after the recovery, so failures right after it are counted too.
      await new Promise((r) => setTimeout(r, 1_000));
    } finally {
      await load.stop();
    }
    const before = figures(load.samples, baselineFrom, outage.from);
    const during = figures(load.samples, outage.from, outage.to);
    const after = figures(load.samples, outage.to, Infinity);
    console.log(`frozen Redis (SIGSTOP ${Math.round((outage.to - outage.from) / 1000)} s), per route; ready again ${recoveredMs} ms after SIGCONT:\n${JSON.stringify({ before, during, after }, null, 1)}`);
    const all = figures(load.samples, 0, Infinity);
    for (const route of Object.keys(ROUTES)) {
      expect({ route, failed: all[route].failed }).toEqual({ route, failed: 0 });
      expect(during[route].requests, route).toBeGreaterThan(100);
      expect(during[route].max, route).toBeLessThan(HUNG_MS);
    }
    expect(degradedSeen, '/readyz during the outage').toMatchObject({ ready: true, status: expect.stringMatching(/degraded/) });
    expect(recoveredMs, 'ms from SIGCONT to ready').toBeGreaterThanOrEqual(0);
    // Route figures reach Redis again (the canary analysis reads them), and what could not be sent was counted.
    const reader = new Redis(redis.url);
    try {
      const since = outage.to;
      await waitFor('route figures flushed after the outage', async () => (await readRouteFigures(reader, redisKeys(config.redis.keyPrefix), 'templates', 'service', since, Date.now() + 5_000)).requests > 0, 10_000, 200);
    } finally {
      reader.disconnect();
    }
    expect(await metricsText()).toMatch(/strangler_gateway_redis_unavailable_total\{what="heartbeat"\} [1-9]/);
  }, 120_000);

  it('serves every route without a failed request while Redis is killed and restarted', async () => {
    const load = startLoad(2);
    let outage = { from: 0, to: 0 };
    let degradedSeen = false;
    try {
      await waitFor('load on every route', async () => Object.values(figures(load.samples, Date.now() - 1_000, Infinity)).every((f) => f.requests > 20), 15_000, 50);
      outage = { from: Date.now(), to: 0 };
      await redis.kill();
      while (Date.now() < outage.from + 5_000) {
        if ((await readyz()).degraded?.some((x) => /redis/i.test(x))) degradedSeen = true;
        await new Promise((ok) => setTimeout(ok, 200));
      }
      await redis.restart();
      outage.to = Date.now();
      await waitFor('/readyz to say ready again', async () => {
        const r = await readyz();
        return r.ready && r.degraded?.length === 0;
      }, 10_000, 100).catch(() => undefined);
      // A second of traffic after the recovery, so failures right after it are counted too.
      await new Promise((r) => setTimeout(r, 1_000));
    } finally {
      await load.stop();
    }
    const during = figures(load.samples, outage.from, outage.to);
    const all = figures(load.samples, 0, Infinity);
    console.log(`killed Redis (SIGKILL, restarted after ${Math.round((outage.to - outage.from) / 1000)} s), per route:\n${JSON.stringify({ during, all }, null, 1)}`);
    for (const route of Object.keys(ROUTES)) {
      expect({ route, failed: all[route].failed }).toEqual({ route, failed: 0 });
      expect(during[route].requests, route).toBeGreaterThan(30);
    }
    expect(degradedSeen, '/readyz said degraded while Redis was down').toBe(true);
    const r = await readyz();
    expect(r).toMatchObject({ ready: true, degraded: [] });
  }, 90_000);
});
