import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResolvedConfig } from '../core/config/load.ts';
import { openCutover } from '../cutover/executor.ts';
import { startGateway, type RunningGateway } from '../gateway/start.ts';
import { waitFor } from '../stack/ports.ts';
import { gatewayTestEnv, legacyTestConfig, testSecrets } from '../test/harness.ts';
import { createDashboard, type Dashboard } from './dashboard.ts';
import { LagHistory } from './lag-history.ts';
import { startUiServer } from './server.ts';
import type { DashboardSnapshot } from './snapshot.ts';

/**
 * `strangler ui`'s API against a real stack: a control database, Redis, a gateway. The page
 * itself is driven in a browser by ui/ui-browser.scenario.test.ts.
 */
let env: Awaited<ReturnType<typeof gatewayTestEnv>>;
let legacyCleanup: () => Promise<void>;
let config: ResolvedConfig;
let gateway: RunningGateway;
let ctl: Awaited<ReturnType<typeof openCutover>>;
let operator: Awaited<ReturnType<typeof openCutover>>;
let dashboard: Dashboard;
let ui: Awaited<ReturnType<typeof startUiServer>>;
const PREFIX = '/api/analytics';
const auth = { authorization: `Bearer ${testSecrets.adminToken}` };

/** A raw HTTP request (fetch cannot set Host), answering status, headers and parsed JSON. */
function call(method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number; headers: Record<string, unknown>; json: any; text: string }> {
  const url = new URL(path, ui.url);
  return new Promise((done, fail) => {
    const req = request({ host: url.hostname, port: url.port, method, path: url.pathname + url.search, headers: { ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)) } : {}), ...headers } }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => {
        let json: any;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        done({ status: res.statusCode!, headers: res.headers, json, text });
      });
    });
    req.on('error', fail);
    req.end(body);
  });
}
const post = (action: string, body: unknown, headers: Record<string, string> = auth) => call('POST', `/api/actions/${action}`, { 'content-type': 'application/json', ...headers }, JSON.stringify(body));
const auditCount = async () => Number((await ctl.pool.query(`SELECT count(*) AS n FROM "${config.control.schema}".audit_log`)).rows[0].n);

/** Reads Server-Sent Events until `until` accepts one; returns the states seen. */
async function events(until: (s: { snapshot: DashboardSnapshot; error: string | null }) => boolean, act: () => Promise<unknown>): Promise<Array<{ snapshot: DashboardSnapshot }>> {
  // A stream that never shows the change fails the test with what it saw, not at vitest's timeout.
  const res = await fetch(`${ui.url}/api/events`, { signal: AbortSignal.timeout(20_000) });
  expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const reader = res.body!.getReader();
  const seen: Array<{ snapshot: DashboardSnapshot; error: string | null }> = [];
  let buffer = '';
  let acted = false;
  try {
    for (;;) {
      const { value, done } = await reader.read().catch((err: Error) => {
        throw new Error(`no event showed the change (${seen.length} events seen): ${err.message}`);
      });
      if (done) throw new Error('the event stream ended');
      buffer += new TextDecoder().decode(value);
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split('\n').find((l) => l.startsWith('data: '));
        if (!data) continue;
        seen.push(JSON.parse(data.slice(6)));
        if (seen.length > 1 && until(seen.at(-1)!)) return seen;
        if (!acted) {
          acted = true;
          await act();
        }
      }
    }
  } finally {
    await reader.cancel();
  }
}

beforeAll(async () => {
  env = await gatewayTestEnv('ui', ['analytics']);
  const legacy = await legacyTestConfig('ui_legacy');
  legacyCleanup = legacy.cleanup;
  config = { ...env.config, legacy: { ...env.config.legacy, databaseUrl: legacy.config.legacy.databaseUrl } };
  gateway = await startGateway(config, { port: 0, instanceId: 'ui-gw' });
  ctl = await openCutover(config, 'ana (strangler ui)');
  operator = await openCutover(config, 'bob');
  dashboard = createDashboard({ config, cutover: ctl.cutover, redis: ctl.redis, keys: ctl.cutover.probe(0).keys, lag: new LagHistory(), actions: true, refreshMs: 300 });
  await dashboard.start();
  ui = await startUiServer({ dashboard, cutover: ctl.cutover, adminToken: testSecrets.adminToken, host: '127.0.0.1', port: 0, keepAliveMs: 1_000 });
}, 60_000);

afterAll(async () => {
  await ui?.close();
  await dashboard?.stop();
  await gateway?.stop();
  await ctl?.close();
  await operator?.close();
  await legacyCleanup?.();
  await env?.cleanup();
});

describe('strangler ui: the page and the state', () => {
  it('serves the page with a policy that runs only its own script and forbids framing; nothing else from disk', async () => {
    const page = await call('GET', '/');
    expect(page.status).toBe(200);
    expect(page.text).toContain('<script src="/app.js" defer></script>');
    expect(page.headers['content-security-policy']).toContain("script-src 'self'");
    expect(page.headers['content-security-policy']).toContain("frame-ancestors 'none'");
    expect((await call('GET', '/app.js')).headers['content-type']).toMatch(/^text\/javascript/);
    expect((await call('GET', '/../package.json')).status).toBe(404);
    expect((await call('GET', '/public/app.js')).status).toBe(404);
  });

  it('gives every prefix in roadmap order with its phase, mode and which gateway applied which version', async () => {
    await waitFor('the gateway to show in the state', async () => ((await call('GET', '/api/state')).json.snapshot?.gateways.length ?? 0) > 0, 10_000);
    const { snapshot } = (await call('GET', '/api/state')).json as { snapshot: DashboardSnapshot };
    expect(snapshot.prefixes.map((p) => p.service)).toEqual(config.services.map((s) => s.name));
    expect(snapshot.prefixes.map((p) => p.order)).toEqual([...snapshot.prefixes.map((p) => p.order)].sort((a, b) => a - b));
    const analytics = snapshot.prefixes.find((p) => p.prefix === PREFIX)!;
    expect(analytics).toMatchObject({ phase: 'legacy', mode: 'legacy' });
    expect(analytics.acks).toEqual([{ gateway: 'ui-gw', version: expect.any(Number), acknowledged: true }]);
    expect(snapshot.instances.find((i) => i.service === 'analytics')!.instances[0]).toMatchObject({ url: env.upstreams.analytics.url });
  });

  it('pushes a change made elsewhere (an operator at the CLI) over the event stream, without a new request', async () => {
    const before = (await call('GET', '/api/state')).json.snapshot as DashboardSnapshot;
    const version = before.prefixes.find((p) => p.prefix === PREFIX)!.gateways.version;
    const seen = await events(
      (s) => s.snapshot.prefixes.find((p) => p.prefix === PREFIX)!.gateways.version > version && s.snapshot.history.some((h) => h.actor === 'bob'),
      () => operator.cutover.rollback(PREFIX, 'from the terminal'),
    );
    const last = seen.at(-1)!.snapshot;
    expect(last.history[0]).toMatchObject({ actor: 'bob', command: 'rollback', reason: 'from the terminal', outcome: 'applied' });
    expect(last.prefixes.find((p) => p.prefix === PREFIX)!.acks).toEqual([{ gateway: 'ui-gw', version: expect.any(Number), acknowledged: true }]);
  });

  it('reads the migration\'s state at a page\'s pace only while a page is open; with none, seldom, and afresh when one opens', async () => {
    const quiet = createDashboard({ config, cutover: ctl.cutover, redis: ctl.redis, keys: ctl.cutover.probe(0).keys, lag: new LagHistory(), actions: true, refreshMs: 100, idleRefreshMs: 60_000 });
    try {
      await quiet.start();
      expect(quiet.reads).toBe(1);
      // Time is what is tested here: ten of a page's refreshes pass with no page open, and no
      // read is made (the idle pace is a minute).
      await new Promise((r) => setTimeout(r, 1_000));
      expect(quiet.reads).toBe(1);
      // A page opens: a read at once, then the page's pace.
      const pushed: string[] = [];
      const unsubscribe = quiet.subscribe((body) => pushed.push(body));
      await waitFor('reads at the page\'s pace', async () => quiet.reads >= 4, 10_000, 20);
      unsubscribe();
      // The refresh armed at the page's pace (100 ms) may still fire once; then ten more of its
      // periods pass without a read.
      await new Promise((r) => setTimeout(r, 300));
      const after = quiet.reads;
      await new Promise((r) => setTimeout(r, 1_000));
      expect(quiet.reads).toBe(after);
    } finally {
      await quiet.stop();
    }
  });
});

describe('strangler ui: actions', () => {
  it('refuses an action without the admin token, with a wrong one, or with the token anywhere but the header, recording nothing', async () => {
    const before = await auditCount();
    const body = { prefix: PREFIX, reason: 'no token' };
    expect((await post('rollback', body, {})).status).toBe(401);
    expect((await post('rollback', body, { authorization: `Bearer ${testSecrets.adminToken}x` })).status).toBe(401);
    expect((await post('rollback', body, { authorization: `Basic ${Buffer.from(`admin:${testSecrets.adminToken}`).toString('base64')}` })).status).toBe(401);
    expect((await post('rollback', body, { cookie: `token=${testSecrets.adminToken}` })).status).toBe(401);
    expect((await call('POST', `/api/actions/rollback?token=${encodeURIComponent(testSecrets.adminToken)}`, { 'content-type': 'application/json' }, JSON.stringify(body))).status).toBe(401);
    const refused = await post('rollback', body, {});
    expect(refused.json.error).toMatchObject({ code: 'UNAUTHENTICATED', message: expect.stringContaining('Authorization: Bearer') });
    expect(await auditCount()).toBe(before);
  });

  it('refuses what a cross-site page could send: a form content type, another Host name, a GET', async () => {
    const before = await auditCount();
    const form = await call('POST', '/api/actions/rollback', { ...auth, 'content-type': 'application/x-www-form-urlencoded' }, 'prefix=/api/analytics&reason=x');
    expect(form.status).toBe(415);
    const rebound = await call('GET', '/api/state', { host: 'attacker.example:80' });
    expect(rebound.status).toBe(403);
    expect(rebound.text).not.toContain('/api/analytics');
    expect((await call('GET', '/api/actions/rollback', auth)).status).toBe(405);
    expect(await auditCount()).toBe(before);
  });

  it('says what is wrong with a bad action: no reason for a rollback, an unknown prefix, an unknown action', async () => {
    const noReason = await post('rollback', { prefix: PREFIX, reason: '  ' });
    expect(noReason.status).toBe(400);
    expect(noReason.json.error.message).toBe('rollback needs a reason: it is recorded in the audit log');
    const unknown = await post('rollback', { prefix: '/api/nowhere', reason: 'x' });
    expect(unknown).toMatchObject({ status: 404, json: { ok: false, exitCode: 2, code: 'UNKNOWN_PREFIX' } });
    expect((await post('finalize', { prefix: PREFIX, reason: 'x' })).status).toBe(404);
  });

  it('rolls back through the control plane with the token: the CLI words, the audit row, the gateway acknowledging', async () => {
    const r = await post('rollback', { prefix: PREFIX, reason: 'from the page' });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ ok: true, exitCode: 0 });
    expect(r.json.text).toMatch(/^rollback \/api\/analytics \(analytics\): legacy → legacy\n {2}applied on 1\/1 gateways in \d+ ms \(route v\d+\)/);
    const [last] = await ctl.cutover.store.history(PREFIX, 1);
    expect(last).toMatchObject({ actor: 'ana (strangler ui)', command: 'rollback', reason: 'from the page', outcome: 'applied', route_version: r.json.outcome.propagation.version });
    expect(gateway.routes.current().version).toBeGreaterThanOrEqual(r.json.outcome.propagation.version);
  });

  it('shows a refused promote with the refusal, exit 2, and records the refusal as the CLI would', async () => {
    const r = await post('promote', { prefix: PREFIX, reason: 'try it' });
    expect(r.status).toBe(409);
    expect(r.json).toMatchObject({ ok: false, exitCode: 2, code: 'CHECK_FAILED' });
    expect(r.json.text).toMatch(/^error \[CHECK_FAILED\]: refused: replication-ready: .*no sync streams for analytics; run: strangler sync start analytics/);
    const [last] = await ctl.cutover.store.history(PREFIX, 1);
    expect(last).toMatchObject({ command: 'promote', outcome: 'refused', reason: 'try it' });
  });

  it('refuses every action when no admin token is configured', async () => {
    const off = await startUiServer({ dashboard, cutover: ctl.cutover, adminToken: undefined, host: '127.0.0.1', port: 0 });
    try {
      const res = await fetch(`${off.url}/api/actions/rollback`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify({ prefix: PREFIX, reason: 'x' }) });
      expect(res.status).toBe(403);
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/no admin token is configured/);
    } finally {
      await off.close();
    }
  });
});
