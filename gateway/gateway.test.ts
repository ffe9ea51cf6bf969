import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { generateKeyPair, SignJWT, UnsecuredJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { Redis } from 'ioredis';
import { waitFor } from '../stack/ports.ts';
import { adminHeaders, gatewayTestEnv } from '../test/harness.ts';
import { readRouteFigures } from './metrics.ts';
import { redisKeys } from './redis-keys.ts';
import { startEchoUpstream } from '../test/upstream.ts';
import { routeWriter } from '../test/routes.ts';
import { startGateway, type RunningGateway } from './start.ts';

let env: Awaited<ReturnType<typeof gatewayTestEnv>>;
let gw: RunningGateway;
let routes: ReturnType<typeof routeWriter>;

const token = (sub: string, opts: { secret?: string; issuer?: string; exp?: number | string } = {}) =>
  new SignJWT({ email: `${sub}@example.test` })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(sub)
    .setIssuer(opts.issuer ?? 'legacy')
    .setIssuedAt()
    .setExpirationTime(opts.exp ?? '1h')
    .sign(new TextEncoder().encode(opts.secret ?? env.config.legacy.jwtSecret));

async function get(path: string, init: RequestInit & { token?: string } = {}) {
  const headers = new Headers(init.headers);
  if (init.token) headers.set('authorization', `Bearer ${init.token}`);
  const res = await fetch(`${gw.url}${path}`, { ...init, headers });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, json, text };
}

/** A request with the path sent exactly as written (fetch would normalise it first). */
function raw(path: string, headers: Record<string, string> = {}): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const req = request(`${gw.url}${path}`, { headers }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : undefined }));
    });
    req.path = path;
    req.on('error', reject);
    req.end();
  });
}

beforeAll(async () => {
  env = await gatewayTestEnv('gateway');
  gw = await startGateway(env.config, { port: 0, instanceId: 'gw-main' });
  routes = routeWriter(env.config);
});

afterAll(async () => {
  await gw?.stop();
  await routes?.close();
  await env?.cleanup();
});

describe('gateway routing by mode', () => {
  it('sends everything to legacy while no route is switched', async () => {
    const t = await token('1');
    expect((await get('/api/invoices', { token: t })).json.server).toBe('legacy');
    expect((await get('/health')).json.server).toBe('legacy');
  });

  it('sends a prefix in service mode to its service, and the rest to legacy', async () => {
    const p = await routes.set({ prefix: '/api/invoices', mode: 'service' });
    expect(p).toMatchObject({ complete: true, acknowledged: 1, live: 1 });
    const t = await token('1');
    expect((await get('/api/invoices/7?x=1', { token: t })).json).toMatchObject({ server: 'invoices', url: '/api/invoices/7?x=1' });
    expect((await get('/api/auth/me', { token: t })).json.server).toBe('legacy');
    await routes.set({ prefix: '/api/invoices', mode: 'legacy' });
    expect((await get('/api/invoices', { token: t })).json.server).toBe('legacy');
  });

  it('routes by the normalised path and forwards that same path', async () => {
    await routes.set({ prefix: '/api/invoices', mode: 'service' });
    const t = await token('1');
    const cases: Array<[string, string]> = [
      ['/api/auth/../invoices', '/api/invoices'],
      ['/api/auth/%2e%2e/invoices', '/api/invoices'],
      ['/api//invoices', '/api/invoices'],
      ['/API/Invoices/3', '/API/Invoices/3'],
    ];
    try {
      for (const [path, forwarded] of cases) {
        const res = await raw(path, { authorization: `Bearer ${t}` });
        expect(res.json, path).toMatchObject({ server: 'invoices', url: forwarded });
      }
      for (const path of ['/api/auth%2f..%2finvoices', '/api/invoices;x=1', '/api/%2e%2e/%2e%2e/etc', '/api\\invoices']) {
        const res = await raw(path, { authorization: `Bearer ${t}` });
        expect(res.status, path).toBe(400);
        expect(res.json.error.code).toBe('BAD_INPUT');
      }
    } finally {
      await routes.set({ prefix: '/api/invoices', mode: 'legacy' });
    }
  });
});

describe('gateway JWT at the edge', () => {
  it('forwards the verified identity and removes identity headers a client sends', async () => {
    const res = await get('/api/invoices', { token: await token('42'), headers: { 'x-user-id': '1', 'x-user-email': 'admin@example.test' } });
    expect(res.json.headers['x-user-id']).toBe('42');
    expect(res.json.headers['x-user-email']).toBe('42@example.test');
    const anonymous = await get('/api/auth/login', { method: 'POST', headers: { 'x-user-id': '1', 'content-type': 'application/json' }, body: '{}' });
    expect(anonymous.json.server).toBe('legacy');
    expect(anonymous.json.headers['x-user-id']).toBeUndefined();
  });

  const attacks: Array<[string, () => Promise<string>]> = [
    ['alg none', async () => new UnsecuredJWT({}).setSubject('1').setIssuer('legacy').setExpirationTime('1h').encode()],
    ['a wrong key', () => token('1', { secret: 'not-the-legacy-secret-at-all-1234' })],
    ['an expired token', () => token('1', { exp: Math.floor(Date.now() / 1000) - 3600 })],
    ['a wrong issuer', () => token('1', { issuer: 'someone-else' })],
    ['a token without exp', async () => new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('1').setIssuer('legacy').sign(new TextEncoder().encode(env.config.legacy.jwtSecret))],
    ['RS256 with no JWKS configured (algorithm confusion)', async () => `${Buffer.from('{"alg":"RS256"}').toString('base64url')}.${Buffer.from('{"sub":"1","iss":"legacy","exp":9999999999}').toString('base64url')}.sig`],
    ['not a JWT', async () => 'garbage'],
  ];
  it.each(attacks)('refuses %s with 401, a JSON error and WWW-Authenticate, before any upstream sees it', async (_name, make) => {
    const before = env.legacy.seen.length;
    const res = await get('/api/invoices', { token: await make() });
    expect(res.status).toBe(401);
    expect(res.json.error.code).toBe('UNAUTHENTICATED');
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer error="invalid_token"/);
    expect(env.legacy.seen.length).toBe(before);
  });

  it('answers 503 with Retry-After, within gateway.jwksTimeoutMs, when the keys of an RS256 token cannot be fetched (not 401)', async () => {
    // A JWKS endpoint that accepts connections and never answers (a hung auth service).
    const hung = createServer(() => undefined);
    await new Promise<void>((r) => hung.listen(0, '127.0.0.1', r));
    const jwksUrl = `http://127.0.0.1:${(hung.address() as AddressInfo).port}/jwks.json`;
    const g2 = await startGateway({ ...env.config, gateway: { ...env.config.gateway, jwks: { url: jwksUrl, issuer: 'strangler-auth' }, jwksTimeoutMs: 300 } }, { port: 0, instanceId: 'gw-jwks' });
    try {
      const { privateKey } = await generateKeyPair('RS256');
      const rs = await new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setSubject('5').setIssuer('strangler-auth').setExpirationTime('1h').sign(privateKey);
      const res = await fetch(`${g2.url}/api/invoices`, { headers: { authorization: `Bearer ${rs}` }, signal: AbortSignal.timeout(10_000) });
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
      expect(((await res.json()) as any).error).toMatchObject({ code: 'NOT_READY', message: expect.stringMatching(/could not be fetched \(no answer within 300 ms\)/) });
    } finally {
      await g2.stop();
      hung.closeAllConnections();
      hung.close();
    }
  });

  it('refuses a protected path without a token, and lets public paths through', async () => {
    expect((await get('/api/invoices')).status).toBe(401);
    expect((await get('/api/auth/login', { method: 'POST', body: '{}' })).status).toBe(200);
    expect((await get('/health')).status).toBe(200);
  });
});

describe('gateway proxy correctness', () => {
  it('sets X-Forwarded-*, passes X-Request-Id and traceparent, and removes hop-by-hop headers', async () => {
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const res = await raw('/health', { 'x-request-id': 'req-123', traceparent, 'x-forwarded-for': '6.6.6.6', 'proxy-authorization': 'secret', te: 'trailers', connection: 'keep-alive, x-drop-me', 'x-drop-me': '1' });
    const seen = res.json.headers;
    expect(seen['x-request-id']).toBe('req-123');
    expect(seen.traceparent).toBe(traceparent);
    expect(seen['x-forwarded-for']).toBe('127.0.0.1'); // SECURITY: the client is not a trusted proxy
    expect(seen['x-forwarded-proto']).toBe('http');
    expect(seen['x-forwarded-host']).toBe(new URL(gw.url).host);
    expect(seen['proxy-authorization']).toBeUndefined();
    expect(seen['x-drop-me']).toBeUndefined();
    const generated = await get('/health');
    expect(generated.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    expect(generated.json.headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  });

  it('behind a trusted proxy, appends to its X-Forwarded-For, keeps its proto, and limits each client by the address it names', async () => {
    const config = { ...env.config, gateway: { ...env.config.gateway, trustedProxies: ['loopback'], rateLimits: [{ prefix: '/health', limit: 2, windowMs: 60_000 }] } };
    const proxied = await startGateway(config, { port: 0, instanceId: 'gw-behind-proxy' });
    try {
      const from = (client: string) => fetch(`${proxied.url}/health`, { headers: { 'x-forwarded-for': client, 'x-forwarded-proto': 'https' } });
      const first = await from('203.0.113.7');
      const seen = ((await first.json()) as any).headers;
      expect(seen['x-forwarded-for']).toBe('203.0.113.7, 127.0.0.1');
      expect(seen['x-forwarded-proto']).toBe('https');
      expect((await from('203.0.113.7')).status).toBe(200);
      expect((await from('203.0.113.7')).status).toBe(429);
      expect((await from('198.51.100.9')).status).toBe(200); // another client behind the same proxy
    } finally {
      await proxied.stop();
    }
  });

  it('streams request bodies and refuses bodies over the limit with 413', async () => {
    const t = await token('1');
    const body = JSON.stringify({ text: 'x'.repeat(100_000) });
    const ok = await get('/api/invoices', { method: 'POST', token: t, body, headers: { 'content-type': 'application/json' } });
    expect(ok.json.bodyLength).toBe(body.length);
    const huge = await get('/api/invoices', { method: 'POST', token: t, body: Buffer.alloc(env.config.gateway.bodyLimitBytes + 1) });
    expect(huge.status).toBe(413);
    expect(huge.json.error.code).toBe('PAYLOAD_TOO_LARGE');
  });

  it('answers 504 when the upstream is too slow and 502 when it is down, each as JSON', async () => {
    const slow = await startGateway({ ...env.config, gateway: { ...env.config.gateway, upstreamTimeoutMs: 100 } }, { port: 0, instanceId: 'gw-slow' });
    try {
      // undici checks its timeouts on a coarse (~1 s) clock: the upstream must be far slower than that.
      const res = await fetch(`${slow.url}/delay/4000`);
      expect(res.status).toBe(504);
      expect(((await res.json()) as any).error.code).toBe('UPSTREAM_TIMEOUT');
    } finally {
      await slow.stop();
    }
    const down = await startGateway({ ...env.config, legacy: { ...env.config.legacy, url: 'http://127.0.0.1:1' } }, { port: 0, instanceId: 'gw-down' });
    try {
      const res = await fetch(`${down.url}/health`);
      expect(res.status).toBe(502);
      expect(((await res.json()) as any).error.message).toMatch(/legacy cannot be reached/);
    } finally {
      await down.stop();
    }
  });

  it('proxies a WebSocket round trip with the verified identity', async () => {
    await routes.set({ prefix: '/api/invoices', mode: 'legacy' });
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/api/invoices/live`, { headers: { authorization: `Bearer ${await token('77')}`, 'x-user-id': '1' } });
    const reply = await new Promise<string>((resolve, reject) => {
      ws.on('open', () => ws.send('ping'));
      ws.on('message', (m) => resolve(m.toString()));
      ws.on('error', reject);
    });
    ws.close();
    expect(reply).toBe('legacy:77:ping');
  });

  it('counts a WebSocket upgrade the service failed in its figures, as the canary analysis reads them', async () => {
    // The service's one instance cannot be reached; its health checks are off, so the upgrade goes to it.
    const keyPrefix = `${env.config.redis.keyPrefix}wsfig:`;
    const config = {
      ...env.config,
      redis: { ...env.config.redis, keyPrefix },
      services: env.config.services.map((s) => (s.name === 'invoices' ? { ...s, url: 'http://127.0.0.1:1', instances: [], healthCheck: { ...s.healthCheck, enabled: false } } : s)),
    };
    const down = await startGateway(config, { port: 0, instanceId: 'gw-ws-figures' });
    const redis = new Redis(config.redis.url);
    const from = Date.now();
    const bearer = `Bearer ${await token('79')}`;
    try {
      await routes.set({ prefix: '/api/invoices', mode: 'service' });
      await waitFor('the gateway to route invoices to the service', async () => down.routes.current().routes.some((r) => r.prefix === '/api/invoices' && r.mode === 'service'), 5_000, 20);
      const status = await new Promise<number>((resolve, reject) => {
        const ws = new WebSocket(`${down.url.replace('http', 'ws')}/api/invoices/live`, { headers: { authorization: bearer } });
        ws.on('open', () => reject(new Error('the upgrade reached an instance that cannot be reached')));
        ws.on('unexpected-response', (_req, res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        ws.on('error', reject);
      });
      expect(status).toBe(502);
      await waitFor('the failed upgrade in the figures of the service side', async () => {
        const f = await readRouteFigures(redis, redisKeys(keyPrefix), 'invoices', 'service', from - 10_000, Date.now() + 10_000);
        return f.requests >= 1 && f.errors >= 1;
      }, 10_000, 100);
    } finally {
      await routes.set({ prefix: '/api/invoices', mode: 'legacy' });
      redis.disconnect();
      await down.stop();
    }
  });

  it('gives a WebSocket upgrade the plain request\'s X-Forwarded-* rule, request id, identity headers and rate limit', async () => {
    const open = (g: RunningGateway, headers: Record<string, string>) =>
      new Promise<{ status: number; headers: Record<string, unknown> }>((resolve, reject) => {
        const ws = new WebSocket(`${g.url.replace('http', 'ws')}/api/invoices/live`, { headers });
        ws.on('open', () => {
          ws.close();
          resolve({ status: 101, headers: {} });
        });
        ws.on('unexpected-response', (_req, res) => {
          res.resume();
          resolve({ status: res.statusCode ?? 0, headers: res.headers });
        });
        ws.on('error', reject);
      });
    const t = await token('78');
    const before = env.legacy.seen.length;
    expect((await open(gw, { authorization: `Bearer ${t}`, 'x-request-id': 'ws-req-1', 'x-forwarded-for': '6.6.6.6', 'x-forwarded-proto': 'https', 'x-user-id': '1' })).status).toBe(101);
    const upgrade = env.legacy.seen.slice(before).find((r) => r.url === '/api/invoices/live')!;
    expect(upgrade.headers).toMatchObject({ 'x-request-id': 'ws-req-1', 'x-forwarded-for': '127.0.0.1', 'x-forwarded-proto': 'http', 'x-user-id': '78', upgrade: 'websocket' });
    expect(upgrade.headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);

    const limited = await startGateway({ ...env.config, redis: { ...env.config.redis, keyPrefix: `${env.config.redis.keyPrefix}ws:` }, gateway: { ...env.config.gateway, rateLimits: [{ prefix: '/api/invoices/live', limit: 2, windowMs: 86_400_000 }] } }, { port: 0, instanceId: 'gw-ws-limit' });
    try {
      const statuses: number[] = [];
      let last: { status: number; headers: Record<string, unknown> } | undefined;
      for (let i = 0; i < 3; i++) statuses.push((last = await open(limited, { authorization: `Bearer ${t}` })).status);
      expect(statuses).toEqual([101, 101, 429]);
      expect(last!.headers).toMatchObject({ 'retry-after': expect.stringMatching(/^\d+$/), 'x-request-id': expect.any(String) });
    } finally {
      await limited.stop();
    }
  });

  it('serves /healthz, /readyz and /metrics', async () => {
    expect((await get('/healthz')).status).toBe(200);
    const ready = await get('/readyz');
    expect(ready.status).toBe(200);
    expect(ready.json).toMatchObject({ ready: true, status: 'ok', degraded: [], routeTable: { degraded: false }, controlDatabase: 'ok', redis: 'ready' });
    await get('/health'); // one unrouted request, also when this test runs alone
    const metrics = await get('/metrics', { headers: adminHeaders });
    expect(metrics.text).toMatch(/strangler_gateway_requests_total\{prefix="unrouted",target="legacy",class="2xx"\} \d+/);
    expect(metrics.text).toMatch(/strangler_gateway_route_version \d+/);
  });
});

describe('gateway canary, fallback and outlier ejection', () => {
  it('keeps each user on one side and sets a canary cookie for anonymous clients', async () => {
    await routes.set({ prefix: '/api/invoices', mode: 'canary', weight: 50 });
    const sides = new Map<string, Set<string>>();
    for (let round = 0; round < 3; round++) {
      for (let u = 1; u <= 40; u++) {
        const res = await get('/api/invoices', { token: await token(String(u)) });
        if (!sides.has(String(u))) sides.set(String(u), new Set());
        sides.get(String(u))!.add(res.json.server);
      }
    }
    expect([...sides.values()].every((s) => s.size === 1)).toBe(true);
    const onService = [...sides.values()].filter((s) => s.has('invoices')).length;
    expect(onService).toBeGreaterThan(5);
    expect(onService).toBeLessThan(35);
    await routes.set({ prefix: '/health', mode: 'canary', weight: 50, service: 'invoices' });
    const anon = await get('/health');
    const cookie = anon.headers.get('set-cookie')!;
    expect(cookie).toMatch(/^strangler_canary=[A-Za-z0-9_-]{22}; Path=\/; Max-Age=2592000; HttpOnly; SameSite=Lax$/);
    const value = cookie.split(';')[0];
    const servers = new Set<string>();
    for (let i = 0; i < 10; i++) servers.add((await get('/health', { headers: { cookie: value } })).json.server);
    expect(servers.size).toBe(1);
    await routes.set({ prefix: '/health', mode: 'legacy', service: 'invoices' }, { prefix: '/api/invoices', mode: 'legacy' });
  });

  it("passes the upstream's cookies on beside the canary cookie", async () => {
    env.legacy.override.set('/api/auth/login', () => ({ status: 200, body: { ok: true }, headers: { 'set-cookie': 'session=s1; Path=/; HttpOnly' } }));
    try {
      await routes.set({ prefix: '/api/auth', mode: 'canary', weight: 0, service: 'auth' });
      const res = await fetch(`${gw.url}/api/auth/login`);
      expect(res.status).toBe(200);
      const cookies = res.headers.getSetCookie();
      expect(cookies).toContain('session=s1; Path=/; HttpOnly');
      expect(cookies.some((c) => c.startsWith('strangler_canary='))).toBe(true);
    } finally {
      env.legacy.override.delete('/api/auth/login');
      await routes.set({ prefix: '/api/auth', mode: 'legacy', service: 'auth' });
    }
  });

  it('stops the upstream request when the client goes away before the answer', async () => {
    const legacy = gw.gateway.upstreams.get('legacy')!;
    const abort = new AbortController();
    const pending = fetch(`${gw.url}/delay/5000`, { signal: abort.signal }).catch((err: Error) => err);
    await expect.poll(() => legacy.view()[0].inFlight, { timeout: 2_000 }).toBe(1);
    abort.abort();
    expect(await pending).toBeInstanceOf(Error);
    // Without the abort the upstream request would stay in flight for the whole 5 s.
    await expect.poll(() => legacy.view()[0].inFlight, { timeout: 1_500 }).toBe(0);
  });

  it('serves a safe request from legacy when the service cannot be reached, and counts it', async () => {
    const broken = { ...env.config, services: env.config.services.map((s) => (s.name === 'invoices' ? { ...s, url: 'http://127.0.0.1:1' } : s)) };
    const g2 = await startGateway(broken, { port: 0, instanceId: 'gw-fallback' });
    try {
      await routes.set({ prefix: '/api/invoices', mode: 'service' });
      const t = await token('1');
      const res = await fetch(`${g2.url}/api/invoices`, { headers: { authorization: `Bearer ${t}` } });
      expect(((await res.json()) as any).server).toBe('legacy');
      const write = await fetch(`${g2.url}/api/invoices`, { method: 'POST', headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json' }, body: '{"a":1}' });
      expect(write.status).toBe(502);
      const idempotent = await fetch(`${g2.url}/api/invoices`, { method: 'POST', headers: { authorization: `Bearer ${t}`, 'idempotency-key': 'k-1', 'content-type': 'application/json' }, body: '{"a":1}' });
      const json = (await idempotent.json()) as any;
      expect(json).toMatchObject({ server: 'legacy', body: '{"a":1}' });
      const metrics = await (await fetch(`${g2.url}/metrics`, { headers: adminHeaders })).text();
      expect(metrics).toMatch(/strangler_gateway_fallbacks_total\{service="invoices",reason="ECONNREFUSED"\} 2/);
    } finally {
      await g2.stop();
      await routes.set({ prefix: '/api/invoices', mode: 'legacy' });
    }
  });

  it('sends a safe request on to another instance after a 503 while the retry budget allows, and passes the 503 on when it does not', async () => {
    const second = await startEchoUpstream('invoices-2');
    env.upstreams.invoices.override.set('/api/invoices', () => ({ status: 503, body: { error: { code: 'UNAVAILABLE', message: 'draining' } } }));
    const withBudget = (retryBudget: { percent: number; minConcurrency: number }) => ({
      ...env.config,
      gateway: { ...env.config.gateway, loadBalancer: { ...env.config.gateway.loadBalancer, policy: 'round-robin' as const, retryBudget } },
      services: env.config.services.map((s) => (s.name === 'invoices' ? { ...s, instances: [second.url] } : s)),
    });
    const open = await startGateway(withBudget({ percent: 20, minConcurrency: 3 }), { port: 0, instanceId: 'gw-budget' });
    const spent = await startGateway(withBudget({ percent: 0, minConcurrency: 0 }), { port: 0, instanceId: 'gw-no-budget' });
    try {
      await routes.set({ prefix: '/api/invoices', mode: 'service' });
      const t = await token('1');
      const ask = async (g: RunningGateway) => {
        const statuses: number[] = [];
        for (let i = 0; i < 4; i++) statuses.push((await fetch(`${g.url}/api/invoices`, { headers: { authorization: `Bearer ${t}` } })).status);
        return statuses;
      };
      // Round robin: half of the first attempts land on the instance answering 503.
      expect(await ask(open)).toEqual([200, 200, 200, 200]);
      expect(await ask(spent)).toContain(503);
      const metrics = await (await fetch(`${spent.url}/metrics`, { headers: adminHeaders })).text();
      expect(metrics).toMatch(/strangler_gateway_retries_over_budget_total\{service="invoices"\} [1-9]/);
    } finally {
      env.upstreams.invoices.override.delete('/api/invoices');
      await Promise.all([open.stop(), spent.stop()]);
      await second.close();
      await routes.set({ prefix: '/api/invoices', mode: 'legacy' });
    }
  });

  it('ejects a lone instance after consecutive 5xx and sends canary traffic to legacy while it is out', async () => {
    const g3 = await startGateway({ ...env.config, gateway: { ...env.config.gateway, outlierDetection: { consecutiveFailures: 3, baseEjectionMs: 60_000, maxEjectionMs: 60_000, maxEjectionPercent: 50 } } }, { port: 0, instanceId: 'gw-breaker' });
    env.upstreams.invoices.override.set('/api/invoices', () => ({ status: 500, body: { error: { code: 'INTERNAL', message: 'boom' } } }));
    try {
      await routes.set({ prefix: '/api/invoices', mode: 'canary', weight: 100 });
      const t = await token('5');
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++) statuses.push((await fetch(`${g3.url}/api/invoices`, { headers: { authorization: `Bearer ${t}` } })).status);
      expect(statuses).toEqual([500, 500, 500]);
      const after = await fetch(`${g3.url}/api/invoices`, { headers: { authorization: `Bearer ${t}` } });
      expect(((await after.json()) as any).server).toBe('legacy');
      expect(await (await fetch(`${g3.url}/metrics`, { headers: adminHeaders })).text()).toMatch(/strangler_gateway_available_instances\{service="invoices"\} 0/);
    } finally {
      env.upstreams.invoices.override.clear();
      await g3.stop();
      await routes.set({ prefix: '/api/invoices', mode: 'legacy' });
    }
  });
});

describe('gateway shadow', () => {
  it('serves legacy, mirrors GETs to the service and records mismatches with samples; a difference gone on a second ask is lag', async () => {
    await routes.set({ prefix: '/api/invoices', mode: 'shadow' });
    env.upstreams.invoices.override.set('/api/invoices/1', () => ({ status: 200, body: { id: 1, total: '2.00', updatedAt: 'b' } }));
    env.legacy.override.set('/api/invoices/1', () => ({ status: 200, body: { id: 1, total: '1.00', updatedAt: 'a' } }));
    env.upstreams.invoices.override.set('/api/invoices/2', () => ({ status: 200, body: { id: 2, updatedAt: 'y' } }));
    env.legacy.override.set('/api/invoices/2', () => ({ status: 200, body: { id: 2, updatedAt: 'x' } }));
    // The service's copy has not received the last write yet when it is first asked.
    let asked = 0;
    env.upstreams.invoices.override.set('/api/invoices/3', () => ({ status: 200, body: { id: 3, total: asked++ === 0 ? '4.00' : '5.00' } }));
    env.legacy.override.set('/api/invoices/3', () => ({ status: 200, body: { id: 3, total: '5.00' } }));
    try {
      const t = await token('1');
      const mismatch = await get('/api/invoices/1', { token: t });
      expect(mismatch.json).toEqual({ id: 1, total: '1.00', updatedAt: 'a' });
      await get('/api/invoices/2', { token: t });
      await get('/api/invoices/3', { token: t });
      const before = env.upstreams.invoices.seen.filter((r) => r.method === 'POST').length;
      await get('/api/invoices', { method: 'POST', token: t, body: '{}' });
      const counts = async () => routes.redis.hgetall(routes.keys.shadowCounts('invoices'));
      const settled = async () => Object.values(await counts()).reduce((n, v) => n + Number(v), 0) >= 3;
      for (let i = 0; i < 150 && !(await settled()); i++) await new Promise((r) => setTimeout(r, 20));
      // /1 still differs when asked again (a mismatch); /3 agrees on the second ask (sync lag).
      expect(await counts()).toEqual({ match: '1', mismatch: '1', lagged: '1' });
      expect(asked).toBe(2);
      const [sample] = (await routes.redis.lrange(routes.keys.shadowSamples('invoices'), 0, 0)).map((s) => JSON.parse(s));
      expect(sample).toMatchObject({ method: 'GET', path: '/api/invoices/1', legacy: { status: 200 }, service: { status: 200 } });
      expect(sample.diffs).toEqual([{ path: '$.total', kind: 'changed', legacy: '1.00', service: '2.00' }]);
      expect(env.upstreams.invoices.seen.filter((r) => r.method === 'POST').length).toBe(before); // writes are never mirrored
    } finally {
      env.upstreams.invoices.override.clear();
      env.legacy.override.clear();
      await routes.set({ prefix: '/api/invoices', mode: 'legacy' });
    }
  });
});

describe('gateway shadow under writes (noise cancellation)', () => {
  it('does not count a list that grows between the calls against an equal service, yet still catches a wrong field', async () => {
    await routes.set({ prefix: '/api/invoices', mode: 'shadow' });
    // One list both sides read, written to all the time: it grows by one between any two calls,
    // so the service (asked after legacy answered) always sees a longer list than legacy did.
    let invoices = 250;
    const page = (currency: string) => () => {
      const n = ++invoices;
      return { status: 200, body: { items: [n, n - 1, n - 2].map((i) => ({ number: `INV-${String(i).padStart(6, '0')}`, total: `${i}.00` })), total: n, currency } };
    };
    env.legacy.override.set('/api/invoices?page', page('EUR'));
    env.upstreams.invoices.override.set('/api/invoices?page', page('EUR'));
    env.legacy.override.set('/api/invoices/wrong?page', page('EUR'));
    env.upstreams.invoices.override.set('/api/invoices/wrong?page', page('USD')); // a real bug in the service
    const counts = async () => routes.redis.hgetall(routes.keys.shadowCounts('invoices'));
    await routes.redis.del(routes.keys.shadowCounts('invoices'), routes.keys.shadowSamples('invoices'), routes.keys.shadowNoise('invoices'));
    try {
      const t = await token('1');
      const legacyBefore = env.legacy.seen.length;
      for (let i = 0; i < 6; i++) expect((await get('/api/invoices?pageSize=3', { token: t })).status).toBe(200);
      await get('/api/invoices/wrong?pageSize=3', { token: t });
      await waitFor('all seven answers to be judged', async () => Object.values(await counts()).reduce((n, v) => n + Number(v), 0) >= 7, 10_000, 25);
      // Six equal answers are noise; the wrong currency is the one real mismatch.
      expect(await counts()).toEqual({ noise: '6', mismatch: '1' });
      // Each mirrored GET asked legacy a second time, marked as shadow traffic.
      const again = env.legacy.seen.slice(legacyBefore).filter((r) => r.headers['x-strangler-shadow'] === '1');
      expect(again.length).toBeGreaterThanOrEqual(7);
      const [sample] = (await routes.redis.lrange(routes.keys.shadowSamples('invoices'), 0, 0)).map((s) => JSON.parse(s));
      expect(sample).toMatchObject({ path: '/api/invoices/wrong?pageSize=3', diffs: [{ path: '$.currency', kind: 'changed', legacy: 'EUR', service: 'USD' }] });
      const noisy = await routes.redis.hgetall(routes.keys.shadowNoise('invoices'));
      expect(Object.keys(noisy).sort()).toEqual(['$.items[*].number', '$.items[*].total', '$.total']);
    } finally {
      env.upstreams.invoices.override.clear();
      env.legacy.override.clear();
      await routes.set({ prefix: '/api/invoices', mode: 'legacy' });
    }
  }, 30_000);
});

describe('gateway switchover fence', () => {
  it('holds writes to a fenced prefix (reads go on), acknowledges only after in-flight writes finish, and releases them to the new route', async () => {
    await routes.set({ prefix: '/api/invoices', mode: 'legacy' });
    const t = await token('8');
    // A slow write is in flight on legacy when the fence arrives.
    env.legacy.override.set('/api/invoices/slow', () => ({ status: 201, body: { slow: true }, delayMs: 300 }));
    const slow = fetch(`${gw.url}/api/invoices/slow`, { method: 'POST', headers: { authorization: `Bearer ${t}` }, body: '{}' });
    await new Promise((r) => setTimeout(r, 50));
    const started = Date.now();
    const fenced = await routes.set({ prefix: '/api/invoices', mode: 'legacy', fenced: true });
    expect(fenced.complete).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(200); // waited for the slow write
    expect((await slow).status).toBe(201);
    const held = fetch(`${gw.url}/api/invoices`, { method: 'POST', headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json' }, body: '{"n":1}' });
    const read = await get('/api/invoices', { token: t });
    expect(read.json.server).toBe('legacy'); // reads are not held
    await new Promise((r) => setTimeout(r, 100));
    await routes.set({ prefix: '/api/invoices', mode: 'service' });
    const released = await held;
    expect(((await released.json()) as any)).toMatchObject({ server: 'invoices', body: '{"n":1}' });
    env.legacy.override.clear();
    await routes.set({ prefix: '/api/invoices', mode: 'legacy' });
  });

  it('answers 503 with Retry-After when a fence is not lifted within fenceHoldMs', async () => {
    const g2 = await startGateway({ ...env.config, gateway: { ...env.config.gateway, fenceHoldMs: 200 } }, { port: 0, instanceId: 'gw-fence' });
    try {
      await routes.set({ prefix: '/api/invoices', mode: 'legacy', fenced: true });
      const res = await fetch(`${g2.url}/api/invoices`, { method: 'POST', headers: { authorization: `Bearer ${await token('8')}` }, body: '{}' });
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
    } finally {
      await g2.stop();
      await routes.set({ prefix: '/api/invoices', mode: 'legacy' });
    }
  });
});
