import { describe, expect, it } from 'vitest';
import { checkCanaryAnalysis, checkDependsOn, checkGateways, checkServiceHealth, checkShadowMismatch, checkSyncLag, checkSyncVerified, DEFAULT_THRESHOLDS as T } from './checks.ts';
import { shadowProblem } from './route-change.ts';

const streaming = { state: 'streaming', lagBytes: 100, lagSeconds: 0.2, lastError: null, lastVerify: { ok: true, at: '2026-11-24T10:00:00Z' } };

describe('preflight checks', () => {
  it.each([
    ['fails closed when no sync engine answers', null, false, false, /no sync runs for invoices/],
    ['fails when the sync is stopped, quoting its last error', { ...streaming, state: 'stopped', lastError: 'slot gone' }, false, false, /stopped \(last error: slot gone\)/],
    ['fails, with the reason and its fix, when the sync stopped at a schema change', { ...streaming, state: 'schema-stopped', lastError: 'column customer_email of invoices is gone …; run: strangler sync resume invoices' }, false, false, /stopped at a schema change: column customer_email .*strangler sync resume invoices$/],
    ['fails (retriable) when lag in bytes is over the threshold', { ...streaming, lagBytes: T.maxLagBytes + 1 }, false, true, /bytes >/],
    ['fails (retriable) when lag in seconds is over the threshold', { ...streaming, lagSeconds: 9 }, false, true, /9.0 s > 5 s/],
    ['passes when streaming under both thresholds', streaming, true, false, /lag 100 bytes/],
  ])('sync-lag %s', (_l, obs, ok, retriable, reason) => {
    const r = checkSyncLag('invoices', obs as never, T);
    expect(r).toMatchObject({ ok, retriable });
    expect(r.reason).toMatch(reason);
  });

  it('sync-verified fails when never verified or when the last verify failed, naming the command', () => {
    expect(checkSyncVerified('auth', { ...streaming, lastVerify: null }).reason).toMatch(/run: strangler sync verify auth/);
    expect(checkSyncVerified('auth', { ...streaming, lastVerify: { ok: false, at: 't', detail: 'users ids 1-100' } }).reason).toMatch(/failed: users ids 1-100/);
    expect(checkSyncVerified('auth', streaming).ok).toBe(true);
  });

  it('shadow-mismatch needs enough samples and a low enough rate', () => {
    expect(checkShadowMismatch('/api/x', 5, 0, T)).toMatchObject({ ok: false, retriable: true });
    expect(checkShadowMismatch('/api/x', 100, 5, T)).toMatchObject({ ok: false, retriable: false });
    expect(checkShadowMismatch('/api/x', 100, 1, T).ok).toBe(true);
  });

  it.each([
    ['passes a service as good as legacy', { requests: 100, errors: 0, p99Ms: 20 }, true],
    ['fails a service answering 500s', { requests: 100, errors: 30, p99Ms: 20 }, false],
    ['fails a service much slower at p99', { requests: 100, errors: 0, p99Ms: 250 }, false],
    ['passes a p99 one latency bucket above legacy (25 → 50 ms: noise, not a regression)', { requests: 100, errors: 0, p99Ms: 50 }, true],
    ['fails when too few requests reached the service', { requests: 3, errors: 0, p99Ms: 10 }, false],
  ])('canary-analysis %s', (_l, service, ok) => {
    expect(checkCanaryAnalysis('/api/x', { requests: 100, errors: 0, p99Ms: 25 }, service, T).ok).toBe(ok);
  });

  it.each([
    ['counts canary requests that fell back to legacy as service failures', { requests: 0, errors: 0, p99Ms: null, fallback: 1204 }, null, false, /service error rate 100.00% > legacy 0.00% \+ 1 points.*service 1,204 req, 100.00% errors \(0 5xx, 1,204 fell back to legacy\)/],
    ['counts requests that met an ejected instance as service failures', { requests: 100, errors: 0, p99Ms: 20, ejected: 10 }, null, false, /service error rate 10.00%.*met an ejected instance/],
    [
      'fails at once, with what happened, while the service has no available instance',
      { requests: 0, errors: 0, p99Ms: null, noinstance: 1180, fallback: 24 },
      { service: 'invoices', available: 0, total: 1 },
      false,
      /^invoices has 0 available instances \(of 1\) now; in the interval 1,204 canary requests fell back to legacy/,
    ],
    ['fails on no-instance requests in the window even if an instance came back since', { requests: 50, errors: 0, p99Ms: 20, noinstance: 3 }, { service: 'invoices', available: 1, total: 1 }, false, /invoices has 1 available instance \(of 1\) now; in the interval 3 canary requests fell back/],
    ['still says so when too few requests were even attempted', { requests: 3, errors: 0, p99Ms: 10 }, { service: 'invoices', available: 1, total: 1 }, false, /only 3 requests reached the service/],
  ])('canary-analysis %s', (_l, service, instances, ok, reason) => {
    const r = checkCanaryAnalysis('/api/x', { requests: 100, errors: 0, p99Ms: 25 }, service, T, instances);
    expect(r.ok).toBe(ok);
    expect(r.reason).toMatch(reason);
  });

  it('canary-analysis compares p90s while a side has too few requests for a p99 (one slow request is not a regression)', () => {
    const legacy = { requests: 30, errors: 0, p99Ms: 250, p90Ms: 80 };
    const oneSlow = checkCanaryAnalysis('/api/x', legacy, { requests: 34, errors: 0, p99Ms: 500, p90Ms: 90 }, T);
    expect(oneSlow.ok).toBe(true);
    expect(oneSlow.reason).toMatch(/p90 90 ms, p99 500 ms/);
    const slower = checkCanaryAnalysis('/api/x', legacy, { requests: 34, errors: 0, p99Ms: 500, p90Ms: 400 }, T);
    expect(slower).toMatchObject({ ok: false, retriable: true });
    expect(slower.reason).toMatch(/service p90 400 ms > 1.5× legacy's 80 ms \(p90: fewer than 100 requests on a side\)/);
    // With enough requests on both sides the p99s are compared.
    expect(checkCanaryAnalysis('/api/x', { ...legacy, requests: 100 }, { requests: 100, errors: 0, p99Ms: 500, p90Ms: 90 }, T).ok).toBe(false);
  });

  it('canary-analysis applies the absolute --max-error-rate and --max-p99-ms limits', () => {
    const t = { ...T, maxErrorRatePercent: 0.5, maxP99Ms: 15 };
    const r = checkCanaryAnalysis('/api/x', { requests: 100, errors: 1, p99Ms: 30 }, { requests: 100, errors: 1, p99Ms: 20 }, t);
    expect(r.reason).toMatch(/error rate 1.00% > max 0.5%/);
    expect(r.reason).toMatch(/p99 20 ms > max 15 ms/);
  });

  it('service-health passes with one healthy instance of several, names the sick ones, and fails with none registered', () => {
    const up = (url: string) => ({ url, ok: true, status: 200, latencyMs: 3 });
    const down = (url: string) => ({ url, ok: false, error: 'ECONNREFUSED' });
    const hc = { enabled: true, path: '/health', expect: '2xx' };
    expect(checkServiceHealth('invoices', [up('http://a')], hc)).toMatchObject({ ok: true, reason: 'invoices answered http://a/health in 3 ms' });
    expect(checkServiceHealth('invoices', [up('http://a'), down('http://b')], hc)).toMatchObject({ ok: true, reason: '1/2 instances of invoices answered /health (not: http://b/health: ECONNREFUSED)' });
    expect(checkServiceHealth('invoices', [down('http://a')], hc)).toMatchObject({ ok: false, retriable: true, reason: 'invoices did not answer http://a/health: ECONNREFUSED; start it or set its healthCheck (path, expect) in strangler.yaml' });
    expect(checkServiceHealth('invoices', [], hc)).toMatchObject({ ok: false, retriable: true, reason: 'no instance of invoices is registered; start one (it registers itself with the registry, or list it under services[].url)' });
  });

  it('service-health names the configured path and expected status, and passes without asking when the checks are off', () => {
    const hc = { enabled: true, path: '/status', expect: 204 };
    expect(checkServiceHealth('notes', [{ url: 'http://a:81', ok: false, status: 200 }], hc)).toMatchObject({ ok: false, reason: expect.stringContaining('http://a:81/status: status 200, expected 204') });
    expect(checkServiceHealth('notes', [{ url: 'http://a:81', ok: true, status: 204, latencyMs: 2 }], hc)).toMatchObject({ ok: true, reason: 'notes answered http://a:81/status in 2 ms' });
    expect(checkServiceHealth('notes', [{ url: 'http://a:81', ok: true }], { ...hc, enabled: false })).toMatchObject({ ok: true, reason: expect.stringContaining('not asked: its health checks are off') });
    expect(checkServiceHealth('notes', [], { ...hc, enabled: false })).toMatchObject({ ok: false });
  });

  it('depends-on-switched names the dependencies not yet switched (analytics after invoices)', () => {
    expect(checkDependsOn('analytics', [{ name: 'invoices', phase: 'canary' }]).reason).toMatch(/invoices \(canary\)/);
    expect(checkDependsOn('analytics', [{ name: 'invoices', phase: 'switched' }]).ok).toBe(true);
  });

  it('gateways-reachable needs Redis and at least one live gateway', () => {
    expect(checkGateways(false, 2).ok).toBe(false);
    expect(checkGateways(true, 0).ok).toBe(false);
    expect(checkGateways(true, 2).ok).toBe(true);
  });
});

describe('shadow needs a gateway that mirrors (issue 21)', () => {
  it('refuses a shadow phase when every live gateway runs the HAProxy engine, saying what to run', () => {
    expect(shadowProblem([{ id: 'hx-1', engine: 'haproxy' }, { id: 'hx-2', engine: 'haproxy' }])).toMatch(/^no live gateway can shadow: hx-1, hx-2 run the HAProxy engine.*strangler gateway/);
  });
  it('lets it through when a Node gateway is live beside HAProxy, or when no gateway is live at all (the gateway check speaks then)', () => {
    expect(shadowProblem([{ id: 'hx-1', engine: 'haproxy' }, { id: 'gw-1', engine: 'node' }])).toBeNull();
    expect(shadowProblem([])).toBeNull();
  });
});
