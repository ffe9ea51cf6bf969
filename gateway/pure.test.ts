import { describe, expect, it } from 'vitest';
import { canaryBucket, newCanaryCookieValue, onServiceSide, readCanaryCookie, xxh32, type CanaryHash } from './canary.ts';
import { downstreamHeaders } from './headers.ts';
import { Counter, Histogram, Registry } from 'prom-client';
import { histogramQuantile, RequestCounter, RequestHistogram } from './metrics.ts';
import { matchesPrefix, normalizeRequestTarget } from './path-normalize.ts';
import { chooseTarget, matchRoute } from './route-choice.ts';
import type { Route } from './route-types.ts';

describe('normalizeRequestTarget', () => {
  it.each([
    ['/api/invoices', '/api/invoices', '/api/invoices', ''],
    ['/api/invoices?page=2&x=%2f', '/api/invoices', '/api/invoices', '?page=2&x=%2f'],
    ['/api/auth/../invoices', '/api/invoices', '/api/invoices', ''],
    ['/api/auth/%2e%2e/invoices', '/api/invoices', '/api/invoices', ''],
    ['/api/auth/%2E%2E/invoices', '/api/invoices', '/api/invoices', ''],
    ['/api/auth/.%2e/invoices', '/api/invoices', '/api/invoices', ''],
    ['/api/./auth', '/api/auth', '/api/auth', ''],
    ['/api//auth', '/api/auth', '/api/auth', ''],
    ['//api///auth//login', '/api/auth/login', '/api/auth/login', ''],
    ['/API/Auth/Login', '/API/Auth/Login', '/api/auth/login', ''],
    ['/api/auth/', '/api/auth/', '/api/auth', ''],
    ['/api/%61uth', '/api/auth', '/api/auth', ''],
    ['/api/caf%c3%a9', '/api/caf%C3%A9', '/api/caf%c3%a9', ''],
    ['/api/auth/%3b', '/api/auth/%3B', '/api/auth/%3b', ''],
    ['/', '/', '/', ''],
    ['/.well-known/x', '/.well-known/x', '/.well-known/x', ''],
    ['http://evil.example/api/auth?x', '/api/auth', '/api/auth', '?x'],
  ])('reads %s as path %s (matched as %s)', (raw, path, matchPath, query) => {
    expect(normalizeRequestTarget(raw)).toEqual({ ok: true, path, matchPath, query });
  });

  it.each([
    ['/api/auth%2flogin', /encoded slashes/],
    ['/api/auth%2Flogin', /encoded slashes/],
    ['/api/auth%5Clogin', /encoded slashes/],
    ['/api\\auth', /backslashes/],
    ['/api/auth;jsessionid=1/login', /path parameters/],
    ['/../etc/passwd', /climbs above the root/],
    ['/api/../../etc', /climbs above the root/],
    ['/api/%00', /control/],
    ['/api/%zz', /malformed/],
    ['/api/%', /malformed/],
    ['api/auth', /must start with/],
    ['*', /must start with/],
  ])('refuses %s', (raw, reason) => {
    const r = normalizeRequestTarget(raw);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(reason);
  });

  it.each([
    ['/api/auth', '/api/auth', true],
    ['/api/auth/login', '/api/auth', true],
    ['/api/authx', '/api/auth', false],
    ['/api', '/api/auth', false],
    ['/anything', '/', true],
  ])('matchesPrefix(%s, %s) is %s', (path, prefix, expected) => {
    expect(matchesPrefix(path, prefix)).toBe(expected);
  });
});

describe('canary', () => {
  const users = Array.from({ length: 10_000 }, (_, i) => `user-${i + 1}`);
  const cookies = Array.from({ length: 10_000 }, () => newCanaryCookieValue());
  const weights = [0, 1, 5, 10, 25, 50, 75, 90, 99, 100];

  const cases: Array<[string, string[], CanaryHash]> = [['JWT subjects', users, 'xxh32'], ['cookies', cookies, 'xxh32'], ['JWT subjects', users, 'fnv1a'], ['cookies', cookies, 'fnv1a']];
  it.each(cases)('sends each weight’s share of 10,000 users (%s) to the service, within ±2 points (%s)', (_label, keys, hash) => {
    for (const weight of weights) {
      const share = (keys.filter((k) => onServiceSide(canaryBucket(k, 'invoices', hash), weight)).length / keys.length) * 100;
      expect(Math.abs(share - weight), `weight ${weight}: ${share}%`).toBeLessThanOrEqual(2);
    }
  });

  it('never moves a user back to legacy when the weight rises', () => {
    const onService = new Set<string>();
    for (const weight of weights) {
      const now = new Set(users.filter((u) => onServiceSide(canaryBucket(u, 'invoices'), weight)));
      for (const u of onService) expect(now.has(u)).toBe(true);
      onService.clear();
      for (const u of now) onService.add(u);
    }
    expect(onService.size).toBe(10_000);
  });

  it('keeps a user on one side for a given weight, and orders users differently per service', () => {
    expect(canaryBucket('user-42', 'invoices')).toBe(canaryBucket('user-42', 'invoices'));
    const a = new Set(users.filter((u) => onServiceSide(canaryBucket(u, 'invoices'), 50)));
    const both = users.filter((u) => a.has(u) && onServiceSide(canaryBucket(u, 'templates'), 50)).length;
    expect(both / 5000).toBeGreaterThan(0.4);
    expect(both / 5000).toBeLessThan(0.6);
  });

  it('hashes with xxHash32 as its reference vectors and HAProxy\'s xxh32 converter give it (over UTF-8 bytes)', () => {
    const h = (text: string) => xxh32(Buffer.from(text, 'utf8'));
    expect([h(''), h('a'), h('abc'), h('Nobody inspects the spammish repetition')]).toEqual([0x02cc5d05, 0x550d7456, 0x32d153ff, 0xe2293b2f]);
    // Checked against HAProxy 2.6: req.hdr(x-k),xxh32.
    expect([h('invoices:42'), h('invoices:zoë'), h('invoices:user-😀')]).toEqual([1913437480, 2049344364, 2865169561]);
  });

  it('keeps the buckets of canaries begun on fnv1a exactly as before xxh32 (a running canary moves no user on upgrade), and pins the xxh32 buckets', () => {
    expect(['user-42', 'zoë', 'user-😀'].map((u) => canaryBucket(u, 'invoices', 'fnv1a'))).toEqual([6075, 3313, 167]);
    expect(['user-42', 'zoë', 'user-😀'].map((u) => canaryBucket(u, 'invoices'))).toEqual([6597, 4364, 9561]);
  });

  it('reads only a well-formed canary cookie', () => {
    expect(readCanaryCookie('a=1; strangler_canary=AbCdEfGhIjKlMnOp12; b=2')).toBe('AbCdEfGhIjKlMnOp12');
    expect(readCanaryCookie('strangler_canary=short')).toBeNull();
    expect(readCanaryCookie('strangler_canary=<script>alert(1)</script>xxxxxxxx')).toBeNull();
    expect(readCanaryCookie(undefined)).toBeNull();
  });
});

describe('route choice', () => {
  const table = {
    version: 3,
    routes: [
      { prefix: '/api', service: 'api', mode: 'legacy', weight: 0 },
      { prefix: '/api/invoices', service: 'invoices', mode: 'canary', weight: 30 },
    ] as Route[],
  };
  it('takes the longest matching prefix, else nothing (legacy)', () => {
    expect(matchRoute(table, '/api/invoices/7')?.service).toBe('invoices');
    expect(matchRoute(table, '/api/invoicesx')?.service).toBe('api');
    expect(matchRoute(table, '/health')).toBeNull();
  });

  const route = (mode: Route['mode'], weight = 0): Route => ({ prefix: '/api/x', service: 'x', mode, weight });
  const req = { method: 'GET', stickyKey: 'user-1', noInstance: false, retrySafe: true };
  it.each([
    ['legacy', route('legacy'), req, { target: 'legacy', shadow: false, fallback: false, why: 'legacy' }],
    ['shadow GET', route('shadow'), req, { target: 'legacy', shadow: true, fallback: false, why: 'shadow' }],
    ['shadow POST', route('shadow'), { ...req, method: 'POST' }, { target: 'legacy', shadow: false, fallback: false, why: 'shadow' }],
    ['canary 100', route('canary', 100), req, { target: 'service', shadow: false, fallback: true, why: 'canary-service' }],
    ['canary 0', route('canary', 0), req, { target: 'legacy', shadow: false, fallback: false, why: 'canary-legacy' }],
    ['canary with no instance available', route('canary', 100), { ...req, noInstance: true }, { target: 'legacy', shadow: false, fallback: false, why: 'no-instance' }],
    ['canary with no instance available, for a user the canary leaves on legacy', route('canary', 0), { ...req, noInstance: true }, { target: 'legacy', shadow: false, fallback: false, why: 'canary-legacy' }],
    ['service POST without idempotency key', route('service'), { ...req, method: 'POST', retrySafe: false }, { target: 'service', shadow: false, fallback: false, why: 'service' }],
    ['unrouted', null, req, { target: 'legacy', shadow: false, fallback: false, why: 'unrouted' }],
    // Method-scoped routes (issue 27 item 4): reads move before writes.
    ['reads-only canary 100, GET', { ...route('canary', 100), methods: ['GET', 'HEAD'] }, req, { target: 'service', shadow: false, fallback: true, why: 'canary-service' }],
    ['reads-only canary 100, POST stays on legacy', { ...route('canary', 100), methods: ['GET', 'HEAD'] }, { ...req, method: 'POST', retrySafe: false }, { target: 'legacy', shadow: false, fallback: false, why: 'legacy' }],
    ['reads-only service route, DELETE stays on legacy', { ...route('service', 100), methods: ['GET'] }, { ...req, method: 'DELETE', retrySafe: false }, { target: 'legacy', shadow: false, fallback: false, why: 'legacy' }],
    ['shadow scoped to HEAD: a GET is not mirrored', { ...route('shadow'), methods: ['HEAD'] }, req, { target: 'legacy', shadow: false, fallback: false, why: 'legacy' }],
    ['reads-only canary with no instance: the out-of-scope POST is no service failure', { ...route('canary', 100), methods: ['GET'] }, { ...req, method: 'POST', noInstance: true, retrySafe: false }, { target: 'legacy', shadow: false, fallback: false, why: 'legacy' }],
  ])('%s', (_name, r, request, expected) => {
    expect(chooseTarget(r, request)).toEqual(expected);
  });
});

describe('response headers to the client', () => {
  const raw = (...pairs: string[]) => pairs.map((p) => Buffer.from(p, 'latin1'));

  it('drops hop-by-hop headers and those the Connection header lists, keeps Content-Length', () => {
    const out = downstreamHeaders(raw('Content-Type', 'application/json', 'Content-Length', '2', 'Connection', 'keep-alive, X-Internal', 'Keep-Alive', 'timeout=5', 'X-Internal', 'secret', 'Transfer-Encoding', 'chunked', 'Date', 'x'), 'rid');
    expect(out).toEqual(['Content-Type', 'application/json', 'Content-Length', '2', 'Date', 'x', 'x-request-id', 'rid']);
  });

  it("puts the gateway's request id and headers in place of the upstream's, and adds its cookie to the upstream's", () => {
    const out = downstreamHeaders(raw('X-Request-Id', 'theirs', 'RateLimit-Limit', '5', 'Set-Cookie', 'session=a', 'Set-Cookie', 'theme=b'), 'ours', { 'ratelimit-limit': '100', 'set-cookie': 'strangler_canary=c' });
    expect(out).toEqual(['Set-Cookie', 'session=a', 'Set-Cookie', 'theme=b', 'x-request-id', 'ours', 'ratelimit-limit', '100', 'set-cookie', 'strangler_canary=c']);
  });
});

describe('latency quantiles from histogram buckets', () => {
  const h = (...pairs: Array<[number, number]>) => pairs.map(([le, count]) => ({ le, count }));

  it('interpolates inside the bucket holding the rank, as histogram_quantile does', () => {
    // 100 requests: 90 up to 100 ms, 10 in (100, 250]: p90 at the 100 ms bound, p99 at 90% of the way to 250.
    expect(histogramQuantile(h([100, 90], [250, 10]), 0.9)).toBe(100);
    expect(histogramQuantile(h([100, 90], [250, 10]), 0.99)).toBe(235);
    expect(histogramQuantile(h([5, 0], [10, 4]), 0.5)).toBe(7.5);
  });

  it('answers the highest finite bound in the unbounded bucket, 0 when empty', () => {
    expect(histogramQuantile(h([500, 50], [Infinity, 50]), 0.99)).toBe(500);
    expect(histogramQuantile(h([Infinity, 3]), 0.99)).toBe(Infinity);
    expect(histogramQuantile([], 0.99)).toBe(0);
  });
});

describe('request-path metrics', () => {
  it('render exactly as prom-client renders a counter and a histogram fed the same requests', async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const bounds = [0.005, 0.01, 0.1, 1];
    const counter = new RequestCounter(ours, 'req_total', 'Requests', ['prefix', 'class']);
    const histogram = new RequestHistogram(ours, 'req_seconds', 'Latency', ['prefix'], bounds);
    const refCounter = new Counter({ name: 'req_total', help: 'Requests', labelNames: ['prefix', 'class'], registers: [theirs] });
    const refHistogram = new Histogram({ name: 'req_seconds', help: 'Latency', labelNames: ['prefix'], buckets: bounds, registers: [theirs] });
    const requests: Array<[string, string, number]> = [['/api/a', '2xx', 0.004], ['/api/a', '2xx', 0.005], ['/api/a', '5xx', 0.2], ['/api/b', '2xx', 3], ['/api/b', '4xx', 0.01]];
    for (const [prefix, klass, seconds] of requests) {
      counter.labels(prefix, klass).value++;
      histogram.observe(histogram.labels(prefix), seconds);
      refCounter.inc({ prefix, class: klass });
      refHistogram.observe({ prefix }, seconds);
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
    expect(() => counter.labels('/api/a')).toThrow(/req_total takes 2 label values, got 1/);
  });
});
