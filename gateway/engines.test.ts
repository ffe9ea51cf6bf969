import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { WebSocket } from 'ws';
import { exportJWK, generateKeyPair, SignJWT, UnsecuredJWT, type CryptoKey } from 'jose';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResolvedConfig } from '../core/config/load.ts';
import { generateSecret } from '../core/config/secrets.ts';
import { waitFor } from '../stack/ports.ts';
import { DATA_PLANES, type RunningEngine } from '../test/conformance.ts';
import { gatewayTestEnv, testSecrets } from '../test/harness.ts';
import { routeWriter } from '../test/routes.ts';
import { startEchoUpstream, type EchoUpstream } from '../test/upstream.ts';
import { canaryBucket, onServiceSide } from './canary.ts';
import { readRouteFigures } from './metrics.ts';

/**
 * Issue 21: the same route behaviour on both engines (the Node gateway and HAProxy driven by its
 * agent), each from a real control database and Redis, route changes made the way the control
 * plane makes them (committed, published, acknowledged): longest-prefix routing on the normalised
 * path, modes and method scopes, the sticky monotone canary on the same buckets, JWT refusals,
 * rate limits, health checks, the write fence, fallback to legacy, per-route figures in Redis.
 */

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** The echo upstream that answered (legacy, invoices, invoices-b), or null for the data plane's own answer. */
  server: string | null;
  body: Record<string, unknown>;
}

/** One request with the path exactly as written (no client-side normalisation). */
function send(to: RunningEngine, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Answer> {
  const u = new URL(to.url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, method, path, headers: body !== undefined ? { ...headers, 'content-length': String(Buffer.byteLength(body)) } : headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        let json: Record<string, unknown> = {};
        try {
          json = JSON.parse(text) as Record<string, unknown>;
        } catch {
          // not JSON: an error page
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, server: typeof json.server === 'string' ? json.server : null, body: json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

const secret = () => new TextEncoder().encode(testSecrets.legacyJwtSecret);
const token = (sub: string, tweak: (j: SignJWT) => SignJWT = (j) => j) => tweak(new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setIssuer('legacy').setExpirationTime('1h')).sign(secret());
const bearer = async (sub: string) => ({ authorization: `Bearer ${await token(sub)}` });
const onService = (a: Answer) => a.server !== null && a.server.startsWith('invoices');

/** Runs `fn` over `items`, `n` at a time. */
async function pool<T, R>(items: T[], n: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  }));
  return out;
}

for (const plane of DATA_PLANES) {
  describe(`route behaviour (${plane.name} engine)`, () => {
    let env: Awaited<ReturnType<typeof gatewayTestEnv>>;
    let config: ResolvedConfig;
    let engine: RunningEngine;
    let writer: ReturnType<typeof routeWriter>;
    let second: EchoUpstream;
    let redis: Redis;
    // An identity provider publishing two RS256 keys in a JWKS, each named by its kid (`published`: what it serves now).
    let jwks: Server;
    const signers: Record<string, CryptoKey> = {};
    const keySet: Record<string, Record<string, unknown>> = {};
    let published: string[] = ['k1', 'k2'];
    // While true, the JWKS endpoint takes requests and never answers (a hung identity provider).
    let jwksHangs = false;

    beforeAll(async () => {
      env = await gatewayTestEnv(`engines_${plane.name}`, ['invoices']);
      second = await startEchoUpstream('invoices-b');
      for (const kid of ['k1', 'k2']) {
        const { publicKey, privateKey } = await generateKeyPair('RS256');
        signers[kid] = privateKey;
        keySet[kid] = { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' };
      }
      jwks = createServer((_req, res) => {
        if (!jwksHangs) res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: published.map((kid) => keySet[kid]) }));
      });
      await new Promise<void>((ok) => jwks.listen(0, '127.0.0.1', ok));
      const check = { enabled: true, path: '/health', expect: '2xx' as const, intervalMs: 200, timeoutMs: 500, healthyThreshold: 1, unhealthyThreshold: 1 };
      config = {
        ...env.config,
        gateway: { ...env.config.gateway, jwks: { url: `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks.json`, issuer: 'strangler-auth' }, jwksRefreshMs: 1_000, fenceHoldMs: 20_000, rateLimits: [{ prefix: '/', limit: 100_000, windowMs: 60_000 }, { prefix: '/limited', limit: 3, windowMs: 60_000 }] },
        services: env.config.services.map((s) => (s.name === 'invoices' ? { ...s, instances: [second.url], healthCheck: check } : s)),
      };
      writer = routeWriter(config);
      redis = new Redis(config.redis.url);
      engine = await plane.engine(config, `engines-${plane.name}-${process.pid}`);
    });
    afterAll(async () => {
      await engine?.stop();
      await writer?.close();
      redis?.disconnect();
      await second?.close();
      jwks?.closeAllConnections();
      jwks?.close();
      await env?.cleanup();
    });

    it('routes by the longest prefix of the normalised path; path tricks are resolved before matching, never around it', async () => {
      await writer.set({ prefix: '/api/invoices', mode: 'service' }, { prefix: '/api/invoices/archive', service: 'invoices', mode: 'legacy' });
      const auth = await bearer('7');
      const at = async (path: string) => {
        const a = await send(engine, 'GET', path, auth);
        return { on: onService(a) ? 'service' : a.server, url: a.body.url };
      };
      expect(await at('/api/invoices/1')).toEqual({ on: 'service', url: '/api/invoices/1' });
      expect(await at('/API/Invoices/2')).toEqual({ on: 'service', url: '/API/Invoices/2' });
      expect(await at('/api/invoices/./3')).toEqual({ on: 'service', url: '/api/invoices/3' });
      expect(await at('/api//invoices/4')).toEqual({ on: 'service', url: '/api/invoices/4' });
      expect(await at('/api/invoices/archive/5')).toEqual({ on: 'legacy', url: '/api/invoices/archive/5' });
      expect(await at('/api/invoicesx/6')).toEqual({ on: 'legacy', url: '/api/invoicesx/6' });
      expect(await at('/api/invoices/%2e%2e/auth/7')).toEqual({ on: 'legacy', url: '/api/auth/7' });
      expect(await at('/api/other/../invoices/8')).toEqual({ on: 'service', url: '/api/invoices/8' });
      expect((await send(engine, 'GET', '/api/invoices%2f9', auth)).status).toBe(400);
      expect((await send(engine, 'GET', '/api/invoices;x=1/10', auth)).status).toBe(400);
    });

    it('modes: legacy sends all to legacy, service all to the service; a method scope sends other methods to legacy', async () => {
      const auth = await bearer('7');
      await writer.set({ prefix: '/api/invoices', mode: 'legacy' });
      expect((await send(engine, 'GET', '/api/invoices/1', auth)).server).toBe('legacy');
      await writer.set({ prefix: '/api/invoices', mode: 'service', methods: ['GET', 'HEAD'] });
      expect(onService(await send(engine, 'GET', '/api/invoices/1', auth))).toBe(true);
      expect((await send(engine, 'POST', '/api/invoices', { ...auth, 'content-type': 'application/json' }, '{}')).server).toBe('legacy');
      await writer.set({ prefix: '/api/invoices', mode: 'service' });
      expect(onService(await send(engine, 'POST', '/api/invoices', { ...auth, 'content-type': 'application/json' }, '{}'))).toBe(true);
    });

    it('keeps each canary user on the side canary.ts gives them (the same hash on both engines), and raising the weight only moves users to the service', async () => {
      await writer.set({ prefix: '/shop', service: 'invoices', mode: 'canary', weight: 30 });
      const cookies = Array.from({ length: 600 }, (_, i) => `cookie-user-${String(i).padStart(6, '0')}`);
      const sides = async () => pool(cookies, 8, async (c) => onService(await send(engine, 'GET', '/shop/cart', { cookie: `strangler_canary=${c}` })));
      const at30 = await sides();
      expect(at30).toEqual(cookies.map((c) => onServiceSide(canaryBucket(c, 'invoices'), 30)));
      await writer.set({ prefix: '/shop', service: 'invoices', mode: 'canary', weight: 60 });
      const at60 = await sides();
      expect(at60).toEqual(cookies.map((c) => onServiceSide(canaryBucket(c, 'invoices'), 60)));
      expect(at30.every((s, i) => !s || at60[i])).toBe(true);
      // The share over 10,000 users is the hash's (the same buckets): within 2 points of the weight.
      const share = Array.from({ length: 10_000 }, (_, i) => `user-${i}`).filter((u) => onServiceSide(canaryBucket(u, 'invoices'), 30)).length / 100;
      expect(Math.abs(share - 30)).toBeLessThanOrEqual(2);
      // Token users stick by their subject, non-ASCII ones included (xxh32 over the UTF-8 bytes).
      await writer.set({ prefix: '/api/invoices', mode: 'canary', weight: 50 });
      const subs = ['42', 'zoë', 'user-😀', 'Ärger', ...Array.from({ length: 40 }, (_, i) => `sub-${i}`)];
      const got = await pool(subs, 8, async (s) => onService(await send(engine, 'GET', '/api/invoices/1', await bearer(s))));
      expect(got).toEqual(subs.map((s) => onServiceSide(canaryBucket(s, 'invoices'), 50)));
      // A method-scoped canary is bucketed the same way (on HAProxy by the Lua, through HAProxy's own xxh32).
      await writer.set({ prefix: '/api/invoices', mode: 'canary', weight: 50, methods: ['GET', 'HEAD'] });
      expect(await pool(subs, 8, async (s) => onService(await send(engine, 'GET', '/api/invoices/1', await bearer(s))))).toEqual(got);
      // A canary begun before xxh32 (its control row's canary_hash null) keeps FNV-1a over UTF-16 code units on both engines, also
      // when its weight changes: upgrading the toolkit moves none of its users.
      await writer.set({ prefix: '/api/invoices', mode: 'canary', weight: 50 });
      const control = new pg.Client({ connectionString: config.control.databaseUrl });
      await control.connect();
      await control.query(`UPDATE "${config.control.schema}".routes SET canary_hash = NULL WHERE prefix = '/api/invoices'`).finally(() => control.end());
      await writer.set({ prefix: '/api/invoices', mode: 'canary', weight: 60 });
      const old = await pool(subs, 8, async (s) => onService(await send(engine, 'GET', '/api/invoices/1', await bearer(s))));
      expect(old).toEqual(subs.map((s) => onServiceSide(canaryBucket(s, 'invoices', 'fnv1a'), 60)));
      expect(old).not.toEqual(subs.map((s) => onServiceSide(canaryBucket(s, 'invoices'), 60)));
      // A client without a key gets a cookie to stick by, and is then on that cookie's side; a path that needs normalising first
      // (on HAProxy, through the Lua) lands the user on the same side.
      const fresh = await send(engine, 'GET', '/shop/cart');
      expect(String(fresh.headers['set-cookie'])).toMatch(/^strangler_canary=[A-Za-z0-9_-]{16,64}; Path=\/; Max-Age=2592000; HttpOnly; SameSite=Lax$/);
      const given = /^strangler_canary=([^;]+)/.exec(String(fresh.headers['set-cookie']))![1];
      const expected = onServiceSide(canaryBucket(given, 'invoices'), 60);
      for (const path of ['/shop/cart', '/shop//cart', '/shop/./cart', '/SHOP/cart']) {
        const again = await send(engine, 'GET', path, { cookie: `strangler_canary=${given}` });
        expect([path, onService(again), again.headers['set-cookie']]).toEqual([path, expected, undefined]);
      }
      expect(await pool(cookies.slice(0, 50), 8, async (c) => onService(await send(engine, 'GET', '/shop//cart', { cookie: `strangler_canary=${c}` })))).toEqual(at60.slice(0, 50));
    });

    it('counts the canary requests per side in Redis for the analysis', async () => {
      const from = Date.now() - 60_000;
      const figures = async (target: 'legacy' | 'service') => (await readRouteFigures(redis, writer.keys, 'invoices', target, from, Date.now() + 10_000)).requests;
      await waitFor('per-route figures in Redis', async () => (await figures('service')) > 100 && (await figures('legacy')) > 100, 10_000, 100);
    });

    it('SECURITY: refuses tokens with alg none, a wrong key, past exp, no exp, a wrong issuer, a line break in the id; forwards the verified id only, as UTF-8', async () => {
      const path = '/api/invoices/1';
      const refused = {
        none: new UnsecuredJWT({}).setSubject('1').setIssuer('legacy').setExpirationTime('1h').encode(),
        wrongKey: await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('1').setIssuer('legacy').setExpirationTime('1h').sign(new TextEncoder().encode(generateSecret())),
        expired: await token('1', (j) => j.setExpirationTime(Math.floor(Date.now() / 1000) - 600)),
        noExp: await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('1').setIssuer('legacy').sign(secret()),
        wrongIssuer: await token('1', (j) => j.setIssuer('someone-else')),
        notYet: await token('1', (j) => j.setNotBefore(Math.floor(Date.now() / 1000) + 600)),
        lineBreakInId: await token('1\r\nX-Admin: yes'),
      };
      for (const [kind, t] of Object.entries(refused)) expect([kind, (await send(engine, 'GET', path, { authorization: `Bearer ${t}` })).status]).toEqual([kind, 401]);
      expect((await send(engine, 'GET', path)).status).toBe(401);
      const ok = await send(engine, 'GET', '/api/invoices/1', { authorization: `Bearer ${await token('7')}`, 'x-user-id': '1', 'x-user-email': 'admin@example.test' });
      expect(ok.status).toBe(200);
      expect(ok.body.headers).toMatchObject({ 'x-user-id': '7', 'x-user-issuer': 'legacy' });
      expect((ok.body.headers as Record<string, string>)['x-user-email']).toBeUndefined();
      // A user id beyond ASCII reaches the service as its UTF-8 bytes on both engines.
      const utf8 = await send(engine, 'GET', '/api/invoices/1', await bearer('zoë-😀'));
      expect(Buffer.from((utf8.body.headers as Record<string, string>)['x-user-id'], 'latin1').toString('utf8')).toBe('zoë-😀');
    });

    it('SECURITY: accepts a JWKS issuer\'s token only when its kid names the key that signed it', async () => {
      const signed = (kid: string, key: CryptoKey, sub = 'jwks-user') => new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid }).setSubject(sub).setIssuer('strangler-auth').setExpirationTime('1h').sign(key);
      for (const kid of ['k1', 'k2']) {
        const ok = await send(engine, 'GET', '/api/invoices/1', { authorization: `Bearer ${await signed(kid, signers[kid], `user-of-${kid}`)}` });
        expect([kid, ok.status]).toEqual([kid, 200]);
        expect(ok.body.headers).toMatchObject({ 'x-user-id': `user-of-${kid}`, 'x-user-issuer': 'strangler-auth' });
      }
      // The other key of the set, or a kid the issuer does not publish.
      const refused = { otherKeysKid: await signed('k1', signers.k2), unknownKid: await signed('k3', signers.k1) };
      for (const [kind, t] of Object.entries(refused)) expect([kind, (await send(engine, 'GET', '/api/invoices/1', { authorization: `Bearer ${t}` })).status]).toEqual([kind, 401]);
    });

    it('SECURITY: refuses a JWKS key once its issuer stops publishing it (revoked), within gateway.jwksRefreshMs; the other keys go on, also while the issuer hangs', async () => {
      const signed = (kid: string) => new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid }).setSubject(`user-of-${kid}`).setIssuer('strangler-auth').setExpirationTime('1h').sign(signers[kid]);
      const status = async (kid: string) => (await send(engine, 'GET', '/api/invoices/1', { authorization: `Bearer ${await signed(kid)}` })).status;
      expect(await status('k2')).toBe(200);
      published = ['k1'];
      try {
        await waitFor('k2 refused', async () => (await status('k2')) === 401, 10_000);
        expect(await status('k1')).toBe(200);
        // Published again (a revocation undone): accepted again.
        published = ['k1', 'k2'];
        await waitFor('k2 accepted again', async () => (await status('k2')) === 200, 10_000);
        // The identity provider hangs: past several refreshes, the keys fetched before stay in use (none revoked by a fetch that never ends).
        jwksHangs = true;
        await new Promise((ok) => setTimeout(ok, 3 * config.gateway.jwksRefreshMs + config.gateway.jwksTimeoutMs));
        expect([await status('k1'), await status('k2')]).toEqual([200, 200]);
      } finally {
        jwksHangs = false;
        published = ['k1', 'k2'];
      }
    });

    it('applies the rate limit of the longest matching rule: over it, 429 with Retry-After', async () => {
      const statuses = [];
      for (let i = 0; i < 5; i++) statuses.push(await send(engine, 'GET', '/limited/x'));
      expect(statuses.map((a) => a.status)).toEqual([200, 200, 200, 429, 429]);
      expect(Number(statuses[3].headers['retry-after'])).toBeGreaterThan(0);
    });

    it('holds writes to a fenced prefix until the fence is lifted, then routes them by the new table', async () => {
      const auth = { ...(await bearer('7')), 'content-type': 'application/json' };
      await writer.set({ prefix: '/api/invoices', mode: 'legacy' });
      await writer.setWith({ fenceLeaseMs: 30_000 }, { prefix: '/api/invoices', mode: 'legacy', fenced: true });
      let answered = false;
      const held = send(engine, 'POST', '/api/invoices/held', auth, '{}').then((a) => ((answered = true), a));
      // A read goes on while the write waits.
      expect((await send(engine, 'GET', '/api/invoices/1', auth)).server).toBe('legacy');
      expect(answered).toBe(false);
      expect([...env.legacy.seen, ...env.upstreams.invoices.seen, ...second.seen].some((s) => s.url === '/api/invoices/held')).toBe(false);
      await writer.set({ prefix: '/api/invoices', mode: 'service' });
      const a = await held;
      expect(onService(a)).toBe(true);
    });

    it('acknowledges a fence only once the writes already sent under the old route are answered', async () => {
      const auth = { ...(await bearer('7')), 'content-type': 'application/json' };
      await writer.set({ prefix: '/api/invoices', mode: 'legacy' });
      let open!: () => void;
      const gate = new Promise<void>((ok) => (open = ok));
      env.legacy.override.set('/api/invoices/inflight', () => ({ status: 200, body: { server: 'legacy' }, until: gate }));
      const order: string[] = [];
      const write = send(engine, 'POST', '/api/invoices/inflight', auth, '{}').then((a) => (order.push('write answered'), a));
      await waitFor('the write to reach legacy', async () => env.legacy.seen.some((s) => s.url === '/api/invoices/inflight'), 5_000, 10);
      const fence = writer.setWith({ fenceLeaseMs: 30_000 }, { prefix: '/api/invoices', mode: 'legacy', fenced: true }).then((p) => (order.push('fence acknowledged'), p));
      // The write stays in flight until the gate opens, well after an acknowledgement that did not wait for it would have come.
      setTimeout(open, 500);
      const [answered, propagation] = await Promise.all([write, fence]);
      expect(answered.status).toBe(200);
      expect(propagation.complete).toBe(true);
      expect(order).toEqual(['write answered', 'fence acknowledged']);
      env.legacy.override.delete('/api/invoices/inflight');
      await writer.set({ prefix: '/api/invoices', mode: 'legacy' });
    });

    it('carries a WebSocket to the side the route gives it, with the verified id', async () => {
      await writer.set({ prefix: '/api/invoices', mode: 'service' });
      const u = new URL(engine.url);
      const ws = new WebSocket(`ws://${u.host}/api/invoices/live`, { headers: await bearer('7') });
      const reply = await new Promise<string>((resolve, reject) => {
        ws.once('open', () => ws.send('hello'));
        ws.once('message', (m) => resolve(m.toString()));
        ws.once('error', reject);
      });
      ws.close();
      expect(reply).toMatch(/^invoices(-b)?:7:hello$/);
    });

    it('takes an instance failing its health check out of rotation, and back once it passes', async () => {
      await writer.set({ prefix: '/api/invoices', mode: 'service' });
      const auth = await bearer('7');
      const servers = async (n: number) => new Set(await pool(Array.from({ length: n }, () => 0), 4, async () => (await send(engine, 'GET', '/api/invoices/lb', auth)).server));
      await waitFor('both instances in rotation', async () => (await servers(8)).size === 2, 10_000, 50);
      second.override.set('/health', () => ({ status: 503, body: { status: 'failing' } }));
      await waitFor('the failing instance out of rotation', async () => [...(await servers(12))].join() === 'invoices', 10_000, 50);
      second.override.delete('/health');
      await waitFor('the instance back in rotation', async () => (await servers(12)).has('invoices-b'), 10_000, 50);
    });

    it('serves safe requests from legacy while the service has no instance up; writes are not sent to legacy', async () => {
      await writer.set({ prefix: '/api/invoices', mode: 'service' });
      const auth = await bearer('7');
      const health = () => ({ status: 503, body: { status: 'down' } });
      env.upstreams.invoices.override.set('/health', health);
      second.override.set('/health', health);
      env.upstreams.invoices.override.set('/api', () => ({ status: 503, body: { status: 'down' } }));
      second.override.set('/api', () => ({ status: 503, body: { status: 'down' } }));
      await waitFor('a read to fall back to legacy', async () => (await send(engine, 'GET', '/api/invoices/fallback', auth)).server === 'legacy', 10_000, 50);
      const before = env.legacy.seen.length;
      const write = await send(engine, 'POST', '/api/invoices/fallback-write', { ...auth, 'content-type': 'application/json' }, '{}');
      expect(write.status).toBeGreaterThanOrEqual(500);
      expect(env.legacy.seen.slice(before).some((s) => s.url === '/api/invoices/fallback-write')).toBe(false);
    });
  });
}
