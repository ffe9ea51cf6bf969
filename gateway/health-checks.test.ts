import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveConfig, type ResolvedConfig } from '../core/config/load.ts';
import { isExpectedStatus } from '../core/health-check.ts';
import { runChecks, type ProbeContext } from '../cutover/probes.ts';
import { waitFor } from '../stack/ports.ts';
import { gatewayTestEnv } from '../test/harness.ts';
import { formatInstances, readInstances } from './instances-report.ts';
import { redisKeys } from './redis-keys.ts';
import { startGateway, type RunningGateway } from './start.ts';

/**
 * Issue 20, item 6: a monolith (or a service) without /health. The gateway checked legacy at a
 * fixed /health and the preflight asked `<url>/health` whatever strangler.yaml said, so a
 * monolith serving thousands of requests a minute showed "unhealthy, 0 available".
 */

/** A real HTTP server that answers only the paths given (404 elsewhere), as a monolith would. */
async function serve(paths: Record<string, number>): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => res.writeHead(paths[req.url ?? ''] ?? 404).end());
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

let env: Awaited<ReturnType<typeof gatewayTestEnv>>;
const servers: Server[] = [];
let gateway: RunningGateway | undefined;
let redis: Redis;

beforeAll(async () => {
  env = await gatewayTestEnv('health', []);
  redis = new Redis(env.config.redis.url);
});

afterAll(async () => {
  await gateway?.stop();
  redis?.disconnect();
  for (const s of servers) s.close();
  await env?.cleanup();
});

/** The harness config with legacy and one service ("notes") at the given servers and health checks. */
function configWith(legacyUrl: string, legacyHc: unknown, notesUrl: string, notesHc: unknown): ResolvedConfig {
  const c = env.config;
  const raw = {
    legacy: { url: legacyUrl, ...(legacyHc ? { healthCheck: legacyHc } : {}) },
    gateway: { healthCheck: { intervalMs: 100, timeoutMs: 500, healthyThreshold: 1, unhealthyThreshold: 1 } },
    services: [{ name: 'notes', prefix: '/api/notes', port: 1, url: notesUrl, database: 'notes', order: 1, ...(notesHc ? { healthCheck: notesHc } : {}) }],
  };
  const r = resolveConfig(raw);
  return { ...c, legacy: { ...c.legacy, url: legacyUrl, healthCheck: r.legacy.healthCheck }, gateway: { ...c.gateway, healthCheck: r.gateway.healthCheck }, services: r.services.map((s) => ({ ...s, databaseUrl: c.control.databaseUrl })) };
}

describe('health checks per upstream, legacy included (issue 20, item 6)', () => {
  it('reads a status, a range or a class as the statuses of a healthy answer', () => {
    expect([200, 204, 299, 300].map((s) => isExpectedStatus(s, '2xx'))).toEqual([true, true, true, false]);
    expect([199, 200, 399, 400].map((s) => isExpectedStatus(s, '200-399'))).toEqual([false, true, true, false]);
    expect([200, 204].map((s) => isExpectedStatus(s, 204))).toEqual([false, true]);
    expect(() => resolveConfig({ legacy: { healthCheck: { expect: '399-200' } } })).toThrow(/legacy.healthCheck.expect/);
    expect(() => resolveConfig({ legacy: { healthCheck: { expect: 'ok' } } })).toThrow(/a range \("200-399"\) or a class \("2xx"\)/);
  });

  it('shows a monolith without /health healthy in `strangler services` when told {path: /, expect: 200}, and a service at its own path', async () => {
    const monolith = await serve({ '/': 200 });
    const notes = await serve({ '/status': 204 });
    servers.push(monolith.server, notes.server);
    const config = configWith(monolith.url, { path: '/', expect: 200 }, notes.url, { path: '/status', expect: 204 });
    gateway = await startGateway(config, { port: 0, instanceId: 'gw-health' });
    // Both were asked with their own settings (healthyThreshold 1, unhealthyThreshold 1: one answer decides).
    await waitFor('legacy and notes checked', async () => gateway!.gateway.upstreams.get('legacy')!.endpoints[0].health.passes > 1 && gateway!.gateway.upstreams.get('notes')!.endpoints[0].health.passes > 1, 10_000, 50);
    let report: Awaited<ReturnType<typeof readInstances>> = [];
    await waitFor('the gateway to publish its view', async () => (report = await readInstances(config, redis, redisKeys(config.redis.keyPrefix))).every((s) => s.gateways.length > 0), 10_000, 100);
    expect(report.map((s) => [s.service, s.available, s.instances.map((i) => i.health['gw-health'])])).toEqual([
      ['legacy', 1, ['healthy']],
      ['notes', 1, ['healthy']],
    ]);
    expect(formatInstances(report)).toMatch(/^legacy \(discovery: static\): 1 instance, 1 available/);

    // The preflight asks the same way: it passes, and fails on a status not expected.
    const ctx = { config } as ProbeContext;
    expect(await runChecks(ctx, config.services[0], ['service-health'])).toMatchObject([{ ok: true, reason: expect.stringContaining(`notes answered ${notes.url}/status in`) }]);
    const strict = configWith(monolith.url, null, notes.url, { path: '/status', expect: 200 });
    expect(await runChecks({ config: strict } as ProbeContext, strict.services[0], ['service-health'])).toMatchObject([{ ok: false, reason: expect.stringContaining(`${notes.url}/status: status 204, expected 200`) }]);
    await gateway.stop();
    gateway = undefined;
  });

  it('takes a monolith without /health out of rotation with the default check, and never asks it with the checks off', async () => {
    const monolith = await serve({ '/': 200 });
    servers.push(monolith.server);
    let asked = 0;
    monolith.server.prependListener('request', () => asked++);
    const byDefault = configWith(monolith.url, null, 'http://127.0.0.1:1', { enabled: false });
    gateway = await startGateway(byDefault, { port: 0, instanceId: 'gw-health-default' });
    await waitFor('legacy marked unhealthy at /health', async () => gateway!.gateway.upstreams.get('legacy')!.view()[0].health === 'unhealthy', 10_000, 50);
    // The service with its checks off is healthy though nothing listens there (only passive outlier detection applies).
    expect(gateway.gateway.upstreams.get('notes')!.view()[0]).toMatchObject({ health: 'healthy', available: true });
    expect(await runChecks({ config: byDefault } as ProbeContext, byDefault.services[0], ['service-health'])).toMatchObject([{ ok: true, reason: expect.stringContaining('not asked') }]);
    await gateway.stop();

    // Off for legacy, on for a service beside it: several rounds of the service's checks, none to legacy.
    const notes = await serve({ '/status': 204 });
    servers.push(notes.server);
    const off = configWith(monolith.url, { enabled: false }, notes.url, { path: '/status', expect: 204 });
    asked = 0;
    gateway = await startGateway(off, { port: 0, instanceId: 'gw-health-off' });
    await waitFor('three rounds of checks', async () => gateway!.gateway.upstreams.get('notes')!.endpoints[0].health.passes >= 3, 10_000, 50);
    expect(asked).toBe(0);
    expect(gateway.gateway.upstreams.get('legacy')!.view()[0]).toMatchObject({ health: 'healthy', available: true });
  });
});
