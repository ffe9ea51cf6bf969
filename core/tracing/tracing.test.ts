import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer, request, type IncomingHttpHeaders } from 'node:http';
import { join, relative } from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import type { ResolvedConfig } from '../config/load.ts';
import { silentLogger } from '../logger.ts';
import { startGateway, type RunningGateway } from '../../gateway/start.ts';
import { freePort, waitFor } from '../../stack/ports.ts';
import { createTestDatabase, dropTestDatabase, gatewayTestEnv, ROOT } from '../../test/harness.ts';
import { startOtlpReceiver, type ReceivedSpan } from '../../test/otlp-receiver.ts';
import { startService } from '../../test/reference.ts';
import { routeWriter } from '../../test/routes.ts';
import { startTracing } from './tracing.ts';

/**
 * One request, one trace: the gateway's span continues the client's traceparent (or starts the
 * trace), the service's handler span is its child, the service's queries are the handler's
 * children, all exported over OTLP/HTTP to a receiver in this process. Real Postgres and Redis.
 */
let env: Awaited<ReturnType<typeof gatewayTestEnv>>;
let receiver: Awaited<ReturnType<typeof startOtlpReceiver>>;
let serviceDb: string;
let service: Awaited<ReturnType<typeof startService>>;
let gw: RunningGateway;
let routes: ReturnType<typeof routeWriter>;
/** chat: a WebSocket upstream that keeps the headers of each upgrade it accepts. */
const chatServer = createServer((_req, res) => res.writeHead(404).end());
const chatUpgrades: IncomingHttpHeaders[] = [];

const SERVER = 2;
const CLIENT = 3;

beforeAll(async () => {
  receiver = await startOtlpReceiver();
  env = await gatewayTestEnv('tracing', ['auth']);
  serviceDb = await createTestDatabase('tracing_auth');
  const tracing = { endpoint: receiver.endpoint, sampleRatio: 1, serviceName: 'strangler-gateway' };
  const serviceConfig: ResolvedConfig = { ...env.config, tracing, services: env.config.services.map((s) => (s.name === 'auth' ? { ...s, databaseUrl: serviceDb } : s)) };
  service = await startService(serviceConfig, 'auth', { port: 0, instance: false, logger: silentLogger });
  // invoices: two instances that refuse connections (no health checks, so requests are tried on them).
  const dead = [`http://127.0.0.1:${await freePort()}`, `http://127.0.0.1:${await freePort()}`];
  const wss = new WebSocketServer({ server: chatServer });
  wss.on('connection', (socket, req) => {
    chatUpgrades.push(req.headers);
    socket.on('message', (m) => socket.send(m));
  });
  await new Promise<void>((ok) => chatServer.listen(0, '127.0.0.1', ok));
  const chatUrl = `http://127.0.0.1:${(chatServer.address() as { port: number }).port}`;
  const gatewayConfig: ResolvedConfig = {
    ...env.config,
    tracing,
    services: env.config.services.map((s) =>
      s.name === 'auth' ? { ...s, url: service.url } : s.name === 'chat' ? { ...s, url: chatUrl, healthCheck: { ...s.healthCheck, enabled: false } } : s.name === 'invoices' ? { ...s, url: dead[0], instances: [dead[1]], healthCheck: { ...s.healthCheck, enabled: false } } : s,
    ),
  };
  gw = await startGateway(gatewayConfig, { port: 0, instanceId: 'gw-tracing', logger: silentLogger });
  routes = routeWriter(env.config);
}, 60_000);

afterAll(async () => {
  await gw?.stop();
  await service?.close();
  await routes?.close();
  await env?.cleanup();
  if (serviceDb) await dropTestDatabase(serviceDb);
  await receiver?.close();
  chatServer.closeAllConnections();
  await new Promise((ok) => chatServer.close(ok));
});

const hex = (bytes: number) => [...crypto.getRandomValues(new Uint8Array(bytes))].map((b) => b.toString(16).padStart(2, '0')).join('');
const token = (sub: string) =>
  new SignJWT({ email: `${sub}@example.test` }).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setIssuer('legacy').setIssuedAt().setExpirationTime('1h').sign(new TextEncoder().encode(env.config.legacy.jwtSecret));

/** The spans of one trace, once the gateway's, the service's and at least one query's have arrived. */
async function traceOf(pick: (s: ReceivedSpan) => boolean): Promise<{ gateway: ReceivedSpan; handler: ReceivedSpan; queries: ReceivedSpan[]; all: ReceivedSpan[] }> {
  let found: Awaited<ReturnType<typeof traceOf>> | undefined;
  await waitFor('the trace to be exported', async () => {
    const gateway = receiver.spans.find((s) => s.service === 'strangler-gateway' && pick(s));
    if (!gateway) return false;
    const all = receiver.spans.filter((s) => s.traceId === gateway.traceId);
    const handler = all.find((s) => s.service === 'auth' && s.kind === SERVER);
    const queries = all.filter((s) => s.service === 'auth' && s.kind === CLIENT);
    if (!handler || queries.length === 0) return false;
    found = { gateway, handler, queries, all };
    return true;
  }, 15_000);
  return found!;
}

describe('tracing gateway → service → database', () => {
  it('continues the client traceparent through the gateway, the service handler and its query, with the canary side on the gateway span', async () => {
    await routes.set({ prefix: '/api/auth', mode: 'canary', weight: 100 });
    const traceId = hex(16);
    const clientSpan = hex(8);
    const res = await fetch(`${gw.url}/api/auth/me`, { headers: { authorization: `Bearer ${await token('4242')}`, traceparent: `00-${traceId}-${clientSpan}-01` } });
    await res.text();
    expect(res.headers.get('x-request-id')).toBeTruthy();

    const t = await traceOf((s) => s.traceId === traceId);
    // The gateway's span is the client's span's child.
    expect(t.gateway).toMatchObject({ traceId, parentSpanId: clientSpan, kind: SERVER, name: 'GET /api/auth' });
    expect(t.gateway.attributes).toMatchObject({
      'strangler.route.prefix': '/api/auth',
      'strangler.route.mode': 'canary',
      'strangler.route.weight': 100,
      'strangler.canary.side': 'service',
      'strangler.target': 'service',
      'strangler.served': 'service',
      'http.response.status_code': res.status,
    });
    // The service's handler span is the gateway's child; the query is the handler's.
    expect(t.handler).toMatchObject({ traceId, parentSpanId: t.gateway.spanId, name: 'GET /api/auth/me' });
    for (const q of t.queries) expect(q).toMatchObject({ traceId, parentSpanId: t.handler.spanId });
    expect(t.queries.map((q) => q.attributes['db.query.text']).join('\n')).toMatch(/select .* from "users"/i);
    expect(t.queries[0].attributes).toMatchObject({ 'db.system.name': 'postgresql', 'db.operation.name': 'SELECT', 'db.namespace': serviceDb.split('/').pop() });
    // One trace: every span of it hangs off the client's span, nothing dangles.
    const ids = new Set([clientSpan, ...t.all.map((s) => s.spanId)]);
    expect(t.all.filter((s) => !ids.has(s.parentSpanId))).toEqual([]);
    expect(receiver.problems).toEqual([]);
  });

  it('starts the trace at the gateway without a client traceparent, and keeps the context through a request body', async () => {
    await routes.set({ prefix: '/api/auth', mode: 'canary', weight: 100 });
    // The body's second half is sent once the service has the request: it arrives in an event on
    // the connection (whose async context is not the handler's), not in the same read as the head.
    const reached = new Promise((ok) => service.server.once('request', ok));
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(`${gw.url}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'trace-login-1' } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.write('{"email":"nobody@example.test",');
      void reached.then(() => req.end('"password":"not-this-one"}'));
    });
    expect(status).toBe(401);
    const t = await traceOf((s) => s.attributes['strangler.request_id'] === 'trace-login-1');
    expect(t.gateway.parentSpanId).toBe('');
    expect(t.gateway.attributes['strangler.canary.side']).toBe('service');
    // The query ran after express.json read the body (events on the connection's context): still the handler's child.
    expect(t.handler).toMatchObject({ parentSpanId: t.gateway.spanId, name: 'POST /api/auth/login' });
    expect(t.queries.length).toBeGreaterThan(0);
    for (const q of t.queries) expect(q.parentSpanId).toBe(t.handler.spanId);
  });

  it('says which side a canary user is on when the weight keeps them on legacy', async () => {
    await routes.set({ prefix: '/api/auth', mode: 'canary', weight: 0 });
    const res = await fetch(`${gw.url}/api/auth/me`, { headers: { authorization: `Bearer ${await token('7')}`, 'x-request-id': 'trace-legacy-side' } });
    await res.text();
    let span: ReceivedSpan | undefined;
    await waitFor('the gateway span', async () => !!(span = receiver.spans.find((s) => s.attributes['strangler.request_id'] === 'trace-legacy-side')), 15_000);
    expect(span!.attributes).toMatchObject({ 'strangler.canary.side': 'legacy', 'strangler.target': 'legacy', 'strangler.choice': 'canary-legacy' });
  });
});

describe('the gateway span of a retry, a fallback and a shadowed request', () => {
  /** The gateway's span of the request with this id, once exported. */
  async function gatewaySpan(requestId: string): Promise<ReceivedSpan> {
    let span: ReceivedSpan | undefined;
    await waitFor('the gateway span', async () => !!(span = receiver.spans.find((s) => s.service === 'strangler-gateway' && s.attributes['strangler.request_id'] === requestId)), 15_000);
    return span!;
  }

  it('records the retry on the other instance and the fallback to legacy as events, and legacy as the side that served', async () => {
    await routes.set({ prefix: '/api/invoices', mode: 'service' });
    const res = await fetch(`${gw.url}/api/invoices`, { headers: { authorization: `Bearer ${await token('5')}`, 'x-request-id': 'trace-fallback' } });
    expect(((await res.json()) as { server: string }).server).toBe('legacy');
    const span = await gatewaySpan('trace-fallback');
    expect(span.attributes).toMatchObject({ 'strangler.route.mode': 'service', 'strangler.target': 'service', 'strangler.served': 'legacy', 'strangler.fallback_allowed': true });
    expect(span.events.map((e) => e.name)).toEqual(['retry on another instance', 'fallback to legacy']);
    expect(span.events[0].attributes).toMatchObject({ 'strangler.upstream': 'invoices', 'error.type': 'connect' });
    expect(span.events[1].attributes).toMatchObject({ 'strangler.service': 'invoices' });
  });

  it('marks a shadowed request, and the mirror to the service joins its trace', async () => {
    await routes.set({ prefix: '/api/auth', mode: 'shadow' });
    await (await fetch(`${gw.url}/api/auth/me`, { headers: { authorization: `Bearer ${await token('6')}`, 'x-request-id': 'trace-shadow' } })).text();
    const span = await gatewaySpan('trace-shadow');
    expect(span.attributes).toMatchObject({ 'strangler.route.mode': 'shadow', 'strangler.shadow': true, 'strangler.served': 'legacy' });
    await waitFor('the mirror request\'s span', async () => receiver.spans.some((s) => s.service === 'auth' && s.parentSpanId === span.spanId), 15_000);
  });
});

describe('the gateway span of a WebSocket upgrade', () => {
  const spanOf = async (requestId: string) => {
    let span: ReceivedSpan | undefined;
    await waitFor('the gateway span', async () => !!(span = receiver.spans.find((s) => s.service === 'strangler-gateway' && s.attributes['strangler.request_id'] === requestId)), 15_000);
    return span!;
  };

  it('covers the handshake: the route and side, 101, and the traceparent the upstream got is its child', async () => {
    await routes.set({ prefix: '/api/chat', mode: 'service' });
    const traceId = hex(16);
    const clientSpan = hex(8);
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/api/chat/live`, { headers: { authorization: `Bearer ${await token('31')}`, traceparent: `00-${traceId}-${clientSpan}-01`, 'x-request-id': 'trace-ws' } });
    await new Promise((ok, fail) => {
      ws.once('open', ok);
      ws.once('error', fail);
    });
    ws.send('ping');
    expect(String(await new Promise((ok) => ws.once('message', ok)))).toBe('ping');
    ws.close();
    // Exported once the handshake is answered, while the socket is still open.
    const span = await spanOf('trace-ws');
    expect(span).toMatchObject({ traceId, parentSpanId: clientSpan, kind: SERVER, name: 'GET /api/chat' });
    expect(span.attributes).toMatchObject({ 'http.response.status_code': 101, 'network.protocol.name': 'websocket', 'strangler.route.mode': 'service', 'strangler.served': 'service' });
    expect(span.events.map((e) => e.name)).toEqual(['switched protocols']);
    expect(chatUpgrades.at(-1)?.traceparent).toBe(`00-${traceId}-${span.spanId}-01`);
  });

  it('records a refused upgrade with its status (no token on a protected prefix: 401)', async () => {
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/api/chat/live`, { headers: { 'x-request-id': 'trace-ws-refused' } });
    // Ending a refused handshake is an error to ws ("closed before the connection was established"): expected here.
    ws.on('error', () => undefined);
    const status = await new Promise<number>((ok) => ws.once('unexpected-response', (_req, res) => ok(res.statusCode ?? 0)));
    ws.terminate();
    expect(status).toBe(401);
    const span = await spanOf('trace-ws-refused');
    expect(span.attributes).toMatchObject({ 'http.response.status_code': 401, 'network.protocol.name': 'websocket' });
    expect(span.events).toEqual([]);
  });
});

describe('tracing off', () => {
  it('is off without an endpoint: nothing is started', async () => {
    expect(await startTracing({ sampleRatio: 1, serviceName: 'x' })).toBeUndefined();
  });

  it('loads the OpenTelemetry SDK only through startTracing: no other module imports it, and that one only when called', () => {
    const offending: string[] = [];
    const walk = (dir: string): void => {
      for (const name of readdirSync(dir)) {
        const path = join(dir, name);
        if (name.startsWith('.') || ['node_modules', 'dist', 'scratch'].includes(name)) continue;
        if (statSync(path).isDirectory()) walk(path);
        else if (/\.ts$/.test(name) && !name.endsWith('.test.ts')) {
          const file = relative(ROOT, path);
          const text = readFileSync(path, 'utf8');
          if (/from\s+['"]@opentelemetry\//.test(text) && file !== join('core', 'tracing', 'otel.ts')) offending.push(`${file} imports @opentelemetry`);
          if (/['"]\.{1,2}\/(?:[\w-]+\/)*otel\.ts['"]/.test(text) && !(file === join('core', 'tracing', 'tracing.ts') && !/^import .*otel\.ts/m.test(text))) offending.push(`${file} imports otel.ts`);
        }
      }
    };
    walk(ROOT);
    expect(offending).toEqual([]);
    expect(readFileSync(join(ROOT, 'core/tracing/tracing.ts'), 'utf8')).toMatch(/await import\('\.\/otel\.ts'\)/);
  });
});
