import { request } from 'node:http';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../stack/ports.ts';
import { adminHeaders, gatewayTestEnv } from '../test/harness.ts';
import { routeWriter } from '../test/routes.ts';
import { readRouteFigures } from './metrics.ts';
import { startGateway, type RunningGateway } from './start.ts';

/**
 * Issue 19: clients that went away were counted as upstream 502s (`status` showed legacy at
 * 4.41 % errors while clients saw none), which can fail a canary analysis, trigger an automatic
 * rollback, or eject a healthy instance.
 */
let env: Awaited<ReturnType<typeof gatewayTestEnv>>;
let routes: ReturnType<typeof routeWriter>;
let gw: RunningGateway;
let token: string;

beforeAll(async () => {
  env = await gatewayTestEnv('client_aborts', ['invoices']);
  routes = routeWriter(env.config);
  // Two failures in a row would eject the service's only instance.
  gw = await startGateway({ ...env.config, gateway: { ...env.config.gateway, outlierDetection: { consecutiveFailures: 2, baseEjectionMs: 60_000, maxEjectionMs: 60_000, maxEjectionPercent: 100 } } }, { port: 0, instanceId: 'gw-aborts' });
  await routes.set({ prefix: '/api/invoices', mode: 'service' });
  token = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('3').setIssuer('legacy').setExpirationTime('1h').sign(new TextEncoder().encode(env.config.legacy.jwtSecret));
});

afterAll(async () => {
  await gw?.stop();
  await routes?.close();
  await env?.cleanup();
});

const invoices = () => gw.gateway.upstreams.get('invoices')!;
const inFlight = () => invoices().view()[0].inFlight;

/** A POST whose client sends half its body, then goes away. */
function abortUpload(): Promise<void> {
  return new Promise((resolve) => {
    const req = request(`${gw.url}/api/invoices`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': '100000' } });
    req.on('error', () => resolve());
    req.write(`{"text":"${'x'.repeat(1000)}`);
    setTimeout(() => req.destroy(), 100);
  });
}

describe('a client that goes away', () => {
  it('is counted as a client abort, not as a 502, not in the canary figures, and never ejects the instance', async () => {
    const from = Date.now();
    // Before the answer: the upstream is still thinking.
    for (let i = 0; i < 3; i++) {
      const abort = new AbortController();
      const pending = fetch(`${gw.url}/api/invoices/delay/3000`, { headers: { authorization: `Bearer ${token}` }, signal: abort.signal }).catch((err: Error) => err);
      await waitFor('the request to reach the service', async () => inFlight() === 1, 3_000, 10);
      abort.abort();
      expect(await pending).toBeInstanceOf(Error);
      await waitFor('the upstream request to stop', async () => inFlight() === 0, 3_000, 10);
    }
    // During the answer: the head is there, the body still coming.
    for (let i = 0; i < 2; i++) {
      const abort = new AbortController();
      const res = await fetch(`${gw.url}/api/invoices/stream/3000`, { headers: { authorization: `Bearer ${token}` }, signal: abort.signal });
      expect(res.status).toBe(200);
      abort.abort();
      await waitFor('the upstream request to stop', async () => inFlight() === 0, 3_000, 10);
    }
    // During the upload: the request body breaks off (the upstream sees a reset).
    for (let i = 0; i < 3; i++) {
      await abortUpload();
      await waitFor('the upstream request to stop', async () => inFlight() === 0, 3_000, 10);
    }

    // The figures the canary analysis reads (Redis, every gateway): no error.
    await gw.gateway.figures.flush();
    const figures = await readRouteFigures(routes.redis, routes.keys, 'invoices', 'service', from, Date.now() + 5_000);
    expect(figures.errors).toBe(0);
    const metrics = await (await fetch(`${gw.url}/metrics`, { headers: adminHeaders })).text();
    expect(metrics).not.toMatch(/strangler_gateway_requests_total\{prefix="\/api\/invoices",target="service",class="5xx"\}/);
    expect(invoices().view()[0]).toMatchObject({ available: true, failures: 0 });
    expect(metrics).not.toMatch(/strangler_gateway_instance_failures_total\{service="invoices"/);
    expect(metrics).not.toMatch(/strangler_gateway_instance_ejections_total\{service="invoices"/);
    expect(metrics).toMatch(/strangler_gateway_client_aborts_total\{prefix="\/api\/invoices",target="service"\} 8/);
    // And the service still takes the next request.
    const next = await fetch(`${gw.url}/api/invoices`, { headers: { authorization: `Bearer ${token}` } });
    expect(((await next.json()) as { server: string }).server).toBe('invoices');
  });
});
