import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResolvedConfig, ResolvedService } from '../../../core/config/load.ts';
import { silentLogger } from '../../../core/logger.ts';
import { compareResponses, compileIgnorePaths } from '../../../gateway/json-diff.ts';
import { renderTextPng, seedLegacy, startLegacyApp, type RunningLegacy } from '../monolith/index.ts';
import { cleanupPipeline } from '../../../migrations/sync/status.ts';
import { verifyPipeline } from '../../../migrations/sync/verify.ts';
import { SyncWorker } from '../../../migrations/sync/worker.ts';
import { createTestDatabase, dropTestDatabase, legacyTestConfig } from '../../../test/harness.ts';
import { startService, type RunningService } from './app.ts';

/**
 * The parity suite: one contract, written once, run against the monolith and against each
 * extracted service whose database the sync engine filled from the monolith's. Same request,
 * same status, same JSON, except the differences strangler.yaml declares (ignorePaths, which
 * the gateway's shadow diff uses too).
 */
interface Case {
  name: string;
  method?: string;
  path: string;
  body?: unknown;
  /** Seeded user the request runs as (none: anonymous). */
  as?: number;
  /** A raw body (for malformed JSON). Writes go to both sides, so they create new rows rather than change shared ones. */
  raw?: string;
}

const CONTRACT: Record<string, Case[]> = {
  auth: [
    { name: 'login', method: 'POST', path: '/api/auth/login', body: { email: 'user2@example.test', password: 'password-2' } },
    { name: 'login with a wrong password', method: 'POST', path: '/api/auth/login', body: { email: 'user2@example.test', password: 'nope' } },
    { name: 'login with a bad body', method: 'POST', path: '/api/auth/login', body: { email: 'x' } },
    { name: 'malformed JSON', method: 'POST', path: '/api/auth/login', raw: '{"email":' },
    { name: 'me', path: '/api/auth/me', as: 1 },
    { name: 'me without a token', path: '/api/auth/me' },
    { name: 'register a taken email', method: 'POST', path: '/api/auth/register', body: { email: 'user1@example.test', password: 'long enough' } },
  ],
  invoices: [
    { name: 'list, first page', path: '/api/invoices?pageSize=5', as: 1 },
    { name: 'list, filtered', path: '/api/invoices?status=paid&customer=acme&page=1', as: 2 },
    { name: 'list with a bad filter', path: '/api/invoices?status=late', as: 1 },
    { name: 'get one', path: '/api/invoices/1', as: 1 },
    { name: "get another user's", path: '/api/invoices/1', as: 2 },
    { name: 'get a missing one', path: '/api/invoices/99999', as: 1 },
    { name: 'create', method: 'POST', path: '/api/invoices', as: 3, body: { customerName: 'Parity Co', taxRate: '19', tags: ['p'], items: [{ description: 'Work', quantity: '1.5', unitPrice: '100.00' }] } },
    { name: 'create with bad items', method: 'POST', path: '/api/invoices', as: 3, body: { customerName: 'Parity Co', items: [{ description: '', quantity: -1, unitPrice: 'x' }] } },
    { name: "pay someone else's invoice", method: 'POST', path: '/api/invoices/4/pay', as: 2 },
    { name: 'pay a missing invoice', method: 'POST', path: '/api/invoices/77777/pay', as: 4 },
    { name: 'update with an unknown field', method: 'PATCH', path: '/api/invoices/1', as: 1, body: { total: '1.00' } },
  ],
  templates: [
    { name: 'list', path: '/api/templates', as: 1 },
    { name: 'get one', path: '/api/templates/1', as: 1 },
    { name: "someone else's", path: '/api/templates/1', as: 2 },
    { name: 'render an invoice', method: 'POST', path: '/api/templates/1/render', as: 1, body: { invoiceId: 1 } },
    { name: 'render a missing invoice', method: 'POST', path: '/api/templates/1/render', as: 1, body: { invoiceId: 424242 } },
    { name: 'create an unclosed template', method: 'POST', path: '/api/templates', as: 1, body: { name: 'x', body: '{{#items}}' } },
  ],
  analytics: [
    { name: 'revenue by month', path: '/api/analytics/revenue-by-month', as: 1 },
    { name: 'totals by status', path: '/api/analytics/totals-by-status', as: 2 },
    { name: 'top customers', path: '/api/analytics/top-customers?limit=3', as: 3 },
    { name: 'bad limit', path: '/api/analytics/top-customers?limit=0', as: 3 },
  ],
  ocr: [
    { name: 'read a scan (the service through its job queue)', method: 'POST', path: '/api/ocr', as: 2, body: { filename: 'scan.png', contentBase64: '__SCAN__' } },
    { name: 'upload what is not an image', method: 'POST', path: '/api/ocr', as: 2, body: { filename: 'notes.txt', contentBase64: Buffer.from('hello').toString('base64') } },
    { name: 'upload nothing', method: 'POST', path: '/api/ocr', as: 2, body: { filename: 'empty.png', contentBase64: '' } },
    { name: 'a missing document', path: '/api/ocr/documents/424242', as: 2 },
  ],
  chat: [
    { name: 'history', path: '/api/chat/messages', as: 1 },
    { name: 'ask', method: 'POST', path: '/api/chat/messages', as: 5, body: { message: 'how much is unpaid?' } },
    { name: 'ask nothing', method: 'POST', path: '/api/chat/messages', as: 5, body: { message: '' } },
  ],
};

const SCAN = renderTextPng(['Parity Supplies', 'Invoice No: INV-5150', 'Total: 12.34 EUR']).toString('base64');
let base: ResolvedConfig;
let legacy: RunningLegacy;
let cleanupLegacy: () => Promise<void>;
const running: Array<{ service: ResolvedService; app: RunningService; worker: SyncWorker; db: string }> = [];
const tokens = new Map<number, string>();

beforeAll(async () => {
  const t = await legacyTestConfig('parity');
  cleanupLegacy = t.cleanup;
  await seedLegacy(t.config.legacy.databaseUrl, { users: 6, invoices: 60, seed: 11 });
  legacy = await startLegacyApp(t.config, { port: 0, logger: silentLogger });
  const services = await Promise.all(Object.keys(CONTRACT).map(async (name) => ({ ...t.config.services.find((s) => s.name === name)!, databaseUrl: await createTestDatabase(`parity_${name}`) })));
  base = { ...t.config, services: t.config.services.map((s) => services.find((x) => x.name === s.name) ?? s) };
  for (const service of services) {
    const app = await startService(base, service.name, { port: 0, logger: silentLogger });
    const worker = new SyncWorker({ config: base, service, logger: silentLogger });
    await worker.start();
    running.push({ service, app, worker, db: service.databaseUrl });
  }
  for (let n = 1; n <= 6; n++) {
    const res = await fetch(`${legacy.url}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: `user${n}@example.test`, password: `password-${n}` }) });
    tokens.set(n, ((await res.json()) as { token: string }).token);
  }
}, 120_000);

afterAll(async () => {
  for (const r of running) {
    await r.worker.stop();
    await r.app.close();
    await cleanupPipeline(base, r.service).catch(() => undefined);
    await dropTestDatabase(r.db);
  }
  await legacy?.close();
  await cleanupLegacy?.();
});

async function call(url: string, c: Case) {
  const headers: Record<string, string> = {};
  if (c.as) headers.authorization = `Bearer ${tokens.get(c.as)}`;
  if (c.body !== undefined || c.raw !== undefined) headers['content-type'] = 'application/json';
  const body = c.raw ?? (c.body === undefined ? undefined : JSON.stringify(c.body).replace('__SCAN__', SCAN));
  const res = await fetch(`${url}${c.path}`, { method: c.method ?? 'GET', headers, body });
  return { status: res.status, contentType: res.headers.get('content-type') ?? undefined, body: Buffer.from(await res.arrayBuffer()) };
}

describe.each(Object.keys(CONTRACT))('the %s service answers like the monolith', (name) => {
  it('holds an exact copy of the legacy tables it serves, filled by the sync', async () => {
    const r = running.find((x) => x.service.name === name)!;
    const v = await verifyPipeline({ sourceUrl: base.legacy.databaseUrl, targetUrl: r.db, plan: r.worker.plan! });
    expect(v.ok, JSON.stringify(v.tables)).toBe(true);
  });

  it.each(CONTRACT[name].map((c) => [c.name, c] as const))('%s: same status and JSON', async (_n, c) => {
    const r = running.find((x) => x.service.name === name)!;
    const ignore = compileIgnorePaths(r.service.ignorePaths);
    const fromLegacy = await call(legacy.url, c);
    const fromService = await call(r.app.url, c);
    const cmp = compareResponses(fromLegacy, fromService, ignore);
    expect(cmp.diffs, `${c.method ?? 'GET'} ${c.path}: legacy ${fromLegacy.status} ${fromLegacy.body.toString().slice(0, 300)} | service ${fromService.status} ${fromService.body.toString().slice(0, 300)}`).toEqual([]);
    expect(fromService.status).toBe(fromLegacy.status);
  });
});

describe('ids created on both sides during a canary never collide', () => {
  it('gives service-created rows ids in the service range', async () => {
    const r = running.find((x) => x.service.name === 'invoices')!;
    const res = await fetch(`${r.app.url}/api/invoices`, { method: 'POST', headers: { authorization: `Bearer ${tokens.get(1)}`, 'content-type': 'application/json' }, body: JSON.stringify({ customerName: 'Range', items: [{ description: 'x', quantity: 1, unitPrice: '1' }] }) });
    const json = (await res.json()) as { id: number; number: string; items: Array<{ id: number }> };
    expect(json.id).toBeGreaterThan(1_000_000_000);
    expect(json.items[0].id).toBeGreaterThan(1_000_000_000);
    expect(json.number).toBe(`INV-${json.id}`);
  });
});

describe('auth service tokens', () => {
  it('publishes a JWKS, and an RS256 token it issues is accepted by the other services', async () => {
    const auth = running.find((x) => x.service.name === 'auth')!;
    const rs = await startService(base, 'auth', { port: 0, logger: silentLogger, tokenFormat: 'rs256' });
    try {
      const login = await fetch(`${rs.url}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'user1@example.test', password: 'password-1' }) });
      const { token } = (await login.json()) as { token: string };
      expect(JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString())).toMatchObject({ alg: 'RS256', kid: expect.any(String) });
      const jwks = (await (await fetch(`${rs.url}/api/auth/.well-known/jwks.json`)).json()) as { keys: Array<{ kid: string; d?: string }> };
      expect(jwks.keys.length).toBeGreaterThan(0);
      expect(jwks.keys.every((k) => k.d === undefined)).toBe(true); // never the private part
      // The invoices service verifies it through the JWKS of the auth service in strangler.yaml.
      const cfg = { ...base, services: base.services.map((s) => (s.name === 'auth' ? { ...s, url: rs.url } : s)) };
      const inv = await startService(cfg, 'invoices', { port: 0, logger: silentLogger });
      try {
        const res = await fetch(`${inv.url}/api/invoices?pageSize=1`, { headers: { authorization: `Bearer ${token}` } });
        expect(res.status).toBe(200);
      } finally {
        await inv.close();
      }
      // A legacy-format token from the auth service works on the monolith (logged in on either side).
      const legacyFormat = await fetch(`${auth.app.url}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'user1@example.test', password: 'password-1' }) });
      const me = await fetch(`${legacy.url}/api/auth/me`, { headers: { authorization: `Bearer ${((await legacyFormat.json()) as { token: string }).token}` } });
      expect(me.status).toBe(200);
    } finally {
      await rs.close();
    }
  });
});

describe('the service kit', () => {
  it('serves /health with its database check and Prometheus metrics by route pattern', async () => {
    const r = running.find((x) => x.service.name === 'invoices')!;
    const health = await fetch(`${r.app.url}/health`);
    expect(await health.json()).toEqual({ status: 'ok', service: 'invoices', checks: { database: 'ok' } });
    await fetch(`${r.app.url}/api/invoices/1`, { headers: { authorization: `Bearer ${tokens.get(1)}` } });
    await fetch(`${r.app.url}/api/invoices/999999999`, { headers: { authorization: `Bearer ${tokens.get(1)}` } });
    const metrics = await (await fetch(`${r.app.url}/metrics`)).text();
    expect(metrics).toMatch(/http_requests_total\{method="GET",route="\/api\/invoices\/:id",class="2xx"\} \d+/);
    // Regression: an error a handler passes on was labelled without the router's mount path ("/:id"), express having unwound req.baseUrl.
    expect(metrics).toMatch(/http_requests_total\{method="GET",route="\/api\/invoices\/:id",class="4xx"\} \d+/);
  });

  it('finishes a request in flight when it shuts down, then refuses new connections', async () => {
    const svc = await startService(base, 'analytics', { port: 0, logger: silentLogger });
    const inFlight = fetch(`${svc.url}/api/analytics/totals-by-status`, { headers: { authorization: `Bearer ${tokens.get(1)}` } });
    await new Promise((r) => setTimeout(r, 5));
    const closing = svc.close();
    expect((await inFlight).status).toBe(200);
    await closing;
    await expect(fetch(`${svc.url}/health`)).rejects.toThrow();
  });
});
