import { describe, expect, it } from 'vitest';
import type { ResolvedConfig } from '../core/config/load.ts';
import { formatInstances, mergeInstances, type GatewayView } from './instances-report.ts';
import { isAvailable, newHealth, readmitIfDue, recordCheck, recordOutcome, slowStartWeight } from './outlier.ts';
import { hostFilter } from './discovery.ts';
import { Cluster, retryBudgetAllows, type EndpointView } from './upstreams.ts';

const od = { consecutiveFailures: 3, baseEjectionMs: 1_000, maxEjectionMs: 2_500, maxEjectionPercent: 50 };
const hc = { healthyThreshold: 2, unhealthyThreshold: 2 };

describe('active health checks', () => {
  it('admits a new instance on its first pass, and keeps out one that fails its first checks', () => {
    const fresh = newHealth('unknown');
    expect(isAvailable(fresh, 0)).toBe(false);
    expect(recordCheck(fresh, true, hc)).toBe('healthy');
    expect(isAvailable(fresh, 0)).toBe(true);
    const broken = newHealth('unknown');
    expect(recordCheck(broken, false, hc)).toBeNull();
    expect(recordCheck(broken, false, hc)).toBe('unhealthy');
  });

  it('takes a healthy instance out after unhealthyThreshold failures in a row, and back after healthyThreshold passes', () => {
    const h = newHealth('healthy');
    expect([recordCheck(h, false, hc), recordCheck(h, true, hc), recordCheck(h, false, hc)]).toEqual([null, null, null]);
    expect(recordCheck(h, false, hc)).toBe('unhealthy');
    expect(isAvailable(h, 0)).toBe(false);
    expect(recordCheck(h, true, hc)).toBeNull();
    expect(recordCheck(h, true, hc)).toBe('healthy');
  });
});

describe('passive outlier detection', () => {
  const cluster = { ejected: 0, total: 3 };

  it('ejects after consecutive failures only, for the base time, and readmits after it', () => {
    const h = newHealth('healthy');
    expect([recordOutcome(h, false, 0, od, cluster), recordOutcome(h, false, 0, od, cluster), recordOutcome(h, true, 0, od, cluster)]).toEqual([0, 0, 0]);
    expect([recordOutcome(h, false, 10, od, cluster), recordOutcome(h, false, 10, od, cluster), recordOutcome(h, false, 10, od, cluster)]).toEqual([0, 0, 1_000]);
    expect(isAvailable(h, 500)).toBe(false);
    expect(readmitIfDue(h, 500)).toBe(false);
    expect(readmitIfDue(h, 1_010)).toBe(true);
    expect(isAvailable(h, 1_010)).toBe(true);
  });

  it('ejects for longer each time (base × times ejected), capped at maxEjectionMs', () => {
    const h = newHealth('healthy');
    const eject = (now: number) => [1, 2, 3].map(() => recordOutcome(h, false, now, od, cluster)).at(-1);
    expect(eject(0)).toBe(1_000);
    readmitIfDue(h, 1_000);
    expect(eject(1_000)).toBe(2_000);
    readmitIfDue(h, 3_000);
    expect(eject(3_000)).toBe(2_500);
  });

  it('starts the multiplier over once a readmitted instance has stayed in for maxEjectionMs', () => {
    const h = newHealth('healthy');
    const eject = (now: number) => [1, 2, 3].map(() => recordOutcome(h, false, now, od, cluster)).at(-1);
    eject(0);
    readmitIfDue(h, 1_000);
    expect(eject(1_000 + od.maxEjectionMs)).toBe(1_000);
  });

  it('never ejects more than maxEjectionPercent of a cluster, but always may eject one', () => {
    const h = newHealth('healthy');
    for (let i = 0; i < 5; i++) expect(recordOutcome(h, false, 0, od, { ejected: 1, total: 3 })).toBe(0);
    expect(isAvailable(h, 0)).toBe(true);
    const lone = newHealth('healthy');
    expect([1, 2, 3].map(() => recordOutcome(lone, false, 0, { ...od, maxEjectionPercent: 0 }, { ejected: 0, total: 1 })).at(-1)).toBe(1_000);
    const fourth = newHealth('healthy');
    expect([1, 2, 3].map(() => recordOutcome(fourth, false, 0, od, { ejected: 1, total: 4 })).at(-1)).toBe(1_000);
  });
});

describe('strangler services: merging the registry and the gateways', () => {
  const config = { services: [{ name: 'invoices', prefix: '/api/invoices', discovery: 'registry' }, { name: 'auth', prefix: '/api/auth', discovery: 'static' }] } as unknown as ResolvedConfig;
  const endpoint = (id: string, o: Partial<EndpointView> = {}): EndpointView => ({
    id, url: `http://127.0.0.1:1/${id}`, source: 'registry', version: '1', zone: 'z', health: 'healthy', available: true, ejected: false, ejectedForMs: 0, ejections: 0, inFlight: 1, requests: 10, failures: 0, recentRequests: 10, recentFailures: 0, ...o,
  });
  const registered = ['i-1', 'i-2', 'i-3'].map((id) => ({ service: 'invoices', id, url: `http://127.0.0.1:1/${id}`, version: '1', zone: 'z', startedAt: '' }));
  // auth is static: its instance registers too, but the gateways use strangler.yaml's URL.
  registered.push({ service: 'auth', id: 'auth-1', url: 'http://127.0.0.1:5002', version: '1', zone: 'z', startedAt: '' });
  const views: GatewayView[] = [
    { gateway: 'g1', at: 0, clusters: { auth: [endpoint('127.0.0.1:5002', { source: 'static' })], invoices: [endpoint('i-1'), endpoint('i-2', { ejected: true, available: false, ejectedForMs: 4_200, ejections: 2, recentFailures: 5 }), endpoint('i-old')] } },
    { gateway: 'g2', at: 0, clusters: { invoices: [endpoint('i-1', { weightPercent: 40 }), endpoint('i-2'), endpoint('i-3', { health: 'unhealthy', available: false })] } },
  ];

  it('sums in-flight and recent figures over gateways and counts as available only what every gateway may use', () => {
    const [legacy, invoices, auth] = mergeInstances(config, registered, views);
    expect(legacy).toMatchObject({ service: 'legacy', instances: [] });
    expect(auth.instances.map((r) => [r.id, r.registry])).toEqual([['127.0.0.1:5002', 'static']]);
    expect(invoices.available).toBe(1);
    const byId = Object.fromEntries(invoices.instances.map((r) => [r.id, r]));
    expect(byId['i-1']).toMatchObject({ registry: 'live', inFlight: 2, recentRequests: 20, errorRate: 0 });
    expect(byId['i-2']).toMatchObject({ ejected: { g1: 4_200 }, ejections: 2, errorRate: 25 });
    expect(byId['i-3'].health).toEqual({ g2: 'unhealthy' });
    expect(byId['i-old'].registry).toBe('gone');
  });

  it('prints one line per instance with its health on every gateway', () => {
    const text = formatInstances(mergeInstances(config, registered, views));
    expect(text).toContain('invoices /api/invoices (discovery: registry): 4 instances, 1 available on 2 gateways');
    expect(text).toMatch(/i-2 .* live +healthy +yes, 5s left \(2×\) +2 +20 +25\.0%/);
    expect(text).toMatch(/i-3 .* live +unhealthy +no /);
    expect(text).toMatch(/i-1 .* live +healthy \(warming, 40%\) +no /);
    expect(text).toContain('legacy (discovery: static): 0 instances, 0 available on 2 gateways');
  });
});

describe('choosing an instance', () => {
  const options = { outlier: od, healthCheck: { enabled: true, path: '/health', expect: '2xx', intervalMs: 60_000, timeoutMs: 100, ...hc } };
  const statics = ['a', 'b', 'c'].map((id) => ({ id, url: `http://127.0.0.1:9/${id}`, source: 'static' as const }));

  it('least-outstanding sends to the least busy instance, and spreads ties', async () => {
    const c = new Cluster('invoices', { ...options, policy: 'least-outstanding' }, statics);
    const [a, b, cc] = c.endpoints;
    a.outstanding = 3;
    b.outstanding = 1;
    cc.outstanding = 2;
    expect(new Set([1, 2, 3, 4].map(() => c.pick()!.id))).toEqual(new Set(['b']));
    b.outstanding = 3;
    a.outstanding = 3;
    cc.outstanding = 3;
    expect(new Set([1, 2, 3].map(() => c.pick()!.id))).toEqual(new Set(['a', 'b', 'c']));
    await c.close();
  });

  it('round-robin takes each available instance in turn and skips the ejected and the excluded', async () => {
    const c = new Cluster('invoices', { ...options, policy: 'round-robin' }, statics);
    expect([1, 2, 3, 4, 5, 6].map(() => c.pick()!.id)).toEqual(['a', 'b', 'c', 'a', 'b', 'c']);
    const [a, b] = c.endpoints;
    for (let i = 0; i < 3; i++) c.report(b, { ok: false, status: 503, kind: '503' });
    expect(new Set([1, 2, 3, 4].map(() => c.pick()!.id))).toEqual(new Set(['a', 'c']));
    expect(c.pick(new Set([a, c.endpoints[2]]))).toBeNull();
    expect(c.hasAvailable(new Set([a]))).toBe(true);
    await c.close();
  });

  it('has nothing to offer when every instance is out, except legacy (panic: tried anyway)', async () => {
    const svc = new Cluster('invoices', { ...options, policy: 'least-outstanding' }, statics.slice(0, 1));
    for (let i = 0; i < 3; i++) svc.report(svc.endpoints[0], { ok: false, kind: 'connect' });
    expect(svc.pick()).toBeNull();
    expect(svc.hasAvailable()).toBe(false);
    const legacy = new Cluster('legacy', { ...options, policy: 'least-outstanding', panic: true }, statics.slice(0, 1));
    for (let i = 0; i < 3; i++) legacy.report(legacy.endpoints[0], { ok: false, kind: 'connect' });
    expect(legacy.pick()!.id).toBe('a');
    await Promise.all([svc.close(), legacy.close()]);
  });
});

describe('slow start', () => {
  const slow = { windowMs: 10_000, minWeightPercent: 10 };

  it('grows the share of an instance that became healthy from minWeightPercent to full over the window', () => {
    const h = newHealth('unknown');
    recordCheck(h, true, hc, 50_000);
    expect(h.healthySince).toBe(50_000);
    expect(slowStartWeight(h, 50_000, slow)).toBe(0.1);
    expect(slowStartWeight(h, 55_000, slow)).toBe(0.5);
    expect(slowStartWeight(h, 60_000, slow)).toBe(1);
    expect(slowStartWeight(h, 55_000, { ...slow, windowMs: 0 })).toBe(1);
  });

  it('leaves alone the instances healthy from the start', () => {
    expect(slowStartWeight(newHealth('healthy'), 1, slow)).toBe(1);
  });

  it('sends less to an instance still warming (least outstanding, weighted), and its full share after', async () => {
    const statics = ['old', 'new'].map((id) => ({ id, url: `http://127.0.0.1:9/${id}`, source: 'static' as const }));
    const c = new Cluster('invoices', { outlier: od, healthCheck: { enabled: true, path: '/health', expect: '2xx', intervalMs: 60_000, timeoutMs: 100, ...hc }, policy: 'least-outstanding', slowStart: slow }, statics);
    const [old, fresh] = c.endpoints;
    old.outstanding = 3;
    fresh.health.healthySince = Date.now() - 1_000; // 1 s into a 10 s window: weight 0.1
    expect(c.pick()!.id).toBe('old'); // (3 + 1) / 1 < (0 + 1) / 0.1
    fresh.health.healthySince = Date.now() - 10_000;
    expect(c.pick()!.id).toBe('new');
    await c.close();
  });
});

describe('retry budget', () => {
  it('allows retries up to a share of the requests in flight, and never fewer than minConcurrency', () => {
    const budget = { percent: 20, minConcurrency: 3 };
    expect(retryBudgetAllows(budget, 1, 2)).toBe(true);
    expect(retryBudgetAllows(budget, 1, 3)).toBe(false);
    expect(retryBudgetAllows(budget, 100, 19)).toBe(true);
    expect(retryBudgetAllows(budget, 100, 20)).toBe(false);
    expect(retryBudgetAllows({ percent: 0, minConcurrency: 0 }, 100, 0)).toBe(false);
  });

  it('counts retries in flight per cluster: a retry ended frees its place', async () => {
    const statics = ['a', 'b'].map((id) => ({ id, url: `http://127.0.0.1:9/${id}`, source: 'static' as const }));
    const c = new Cluster('invoices', { outlier: od, healthCheck: { enabled: true, path: '/health', expect: '2xx', intervalMs: 60_000, timeoutMs: 100, ...hc }, policy: 'least-outstanding', retryBudget: { percent: 50, minConcurrency: 1 } }, statics);
    c.endpoints[0].outstanding = 4; // 50 % of 4 in flight: 2 retries
    const first = c.startRetry();
    const second = c.startRetry();
    expect(first && second).toBeTruthy();
    expect(c.startRetry()).toBeNull();
    first!();
    first!(); // ending twice frees one place only
    expect(c.startRetry()).not.toBeNull();
    expect(c.startRetry()).toBeNull();
    await c.close();
  });
});

describe('zone-aware routing', () => {
  const specs = [
    { id: 'a1', zone: 'a' },
    { id: 'b1', zone: 'b' },
    { id: 'b2', zone: 'b' },
  ].map((x) => ({ ...x, url: `http://127.0.0.1:9/${x.id}`, source: 'static' as const }));
  const options = { outlier: od, healthCheck: { enabled: true, path: '/health', expect: '2xx', intervalMs: 60_000, timeoutMs: 100, ...hc }, policy: 'round-robin' as const };
  const zoned = (minAvailable: number) => new Cluster('invoices', { ...options, localZone: { zone: 'a', minAvailable } }, specs);

  it('keeps to the local zone while enough of it is available, and goes to any zone otherwise', async () => {
    const c = zoned(1);
    expect(new Set([1, 2, 3, 4].map(() => c.pick()!.id))).toEqual(new Set(['a1']));
    // Already tried on a1 (a retry), or a1 ejected: the other zone.
    expect(c.pick(new Set([c.endpoints[0]]))!.zone).toBe('b');
    for (let i = 0; i < 3; i++) c.report(c.endpoints[0], { ok: false, status: 503, kind: '503' });
    expect(new Set([1, 2, 3, 4].map(() => c.pick()!.id))).toEqual(new Set(['b1', 'b2']));
    await c.close();
    // minAvailable 2: one local instance is not enough to keep to the zone.
    const c2 = zoned(2);
    expect(new Set([1, 2, 3, 4, 5, 6].map(() => c2.pick()!.id))).toEqual(new Set(['a1', 'b1', 'b2']));
    await c2.close();
  });
});

describe('registry.allowedHosts', () => {
  it('admits listed hostnames, addresses and CIDRs only, and anything when empty', () => {
    const allowed = hostFilter(['10.0.0.0/8', 'invoices.internal', '::1']);
    expect(['http://10.2.3.4:5003', 'http://INVOICES.internal:80', 'http://[::1]:5003'].map(allowed)).toEqual([true, true, true]);
    expect(['http://11.0.0.1:5003', 'http://invoices.internal.evil.test', 'http://127.0.0.1:5003', 'not a url'].map(allowed)).toEqual([false, false, false, false]);
    expect(hostFilter([])('http://anything:1')).toBe(true);
  });
});
