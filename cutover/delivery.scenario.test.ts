import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { SignJWT } from 'jose';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResolvedConfig } from '../core/config/load.ts';
import { silentLogger } from '../core/logger.ts';
import { startGateway, type RunningGateway } from '../gateway/start.ts';
import { cleanupPipeline } from '../migrations/sync/status.ts';
import { SyncWorker } from '../migrations/sync/worker.ts';
import { waitFor } from '../stack/ports.ts';
import { createTestDatabase, dropTestDatabase, gatewayTestEnv, ROOT } from '../test/harness.ts';
import { migrateLegacy, seedLegacy, startLegacyApp } from '../test/reference.ts';
import { runBake, type BakeEvent } from './bake.ts';
import { openCutover } from './executor.ts';
import { runProgressive, type ProgressEvent } from './progressive.ts';

/**
 * Progressive delivery judging a service by what happened to its requests (issue 27): a service
 * SIGKILLed during a canary fails the next analysis with that reason, and one that dies during
 * the bake after its switch is rolled back by itself, losing no acknowledged write.
 */

/** A service in its own process (test/fixtures/service-process.ts), so that it can be SIGKILLed. */
async function spawnService(config: ResolvedConfig, name: string, mode?: 'echo'): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ['--import', 'tsx', resolve(ROOT, 'test/fixtures/service-process.ts'), name, ...(mode ? [mode] : [])], {
    env: { ...process.env, STRANGLER_TEST_CONFIG: JSON.stringify(config) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise<string>((ok, fail) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /(http:\/\/\S+)\n/.exec(out);
      if (m) ok(m[1]);
    });
    child.once('exit', (code) => fail(new Error(`the ${name} process exited (${code}) before serving`)));
  });
  return { url, child };
}

const token = (config: ResolvedConfig, sub: string) => new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setIssuer('legacy').setExpirationTime('1h').sign(new TextEncoder().encode(config.legacy.jwtSecret));

/** Requests through the gateway until stopped, spread over users; the answers' statuses by count. */
function load(url: string, request: (i: number) => Promise<Response>) {
  let stop = false;
  const statuses: number[] = [];
  const running = (async () => {
    for (let i = 0; !stop; i++) {
      const res = await request(i).catch(() => null);
      statuses.push(res?.status ?? 0);
      await res?.arrayBuffer();
    }
  })();
  return {
    statuses,
    async stop() {
      stop = true;
      await running;
    },
  };
}

describe('a canary whose service is killed', () => {
  let env: Awaited<ReturnType<typeof gatewayTestEnv>>;
  let config: ResolvedConfig;
  let service: { url: string; child: ChildProcess };
  let gateway: RunningGateway;
  let ctl: Awaited<ReturnType<typeof openCutover>>;
  const PREFIX = '/api/analytics';

  beforeAll(async () => {
    env = await gatewayTestEnv('killed', []);
    service = await spawnService(env.config, 'analytics', 'echo');
    config = {
      ...env.config,
      // Checked every 200 ms, so that the test sees it go down soon after the kill.
      services: env.config.services.map((s) => (s.name === 'analytics' ? { ...s, url: service.url, dependsOn: [], healthCheck: { ...s.healthCheck, intervalMs: 200, timeoutMs: 200 } } : s)),
    };
    gateway = await startGateway(config, { port: 0, instanceId: 'killed-gw' });
    ctl = await openCutover(config, 'test-operator');
  }, 60_000);

  afterAll(async () => {
    service?.child.kill('SIGKILL');
    await gateway?.stop();
    await ctl?.close();
    await env?.cleanup();
  });

  it('fails the next analysis with "0 available instances; N canary requests fell back to legacy", not "not enough traffic", and rolls back', async () => {
    // The way to the canary is forced: this test is about the analysis, not the preflight checks.
    for (const kind of ['sync', 'shadow'] as const) await ctl.cutover.change(PREFIX, { kind }, { force: true, reason: 'test: straight to the canary' });
    const users = await Promise.all(Array.from({ length: 40 }, (_, i) => token(config, `u${i}`)));
    const traffic = load(gateway.url, (i) => fetch(`${gateway.url}${PREFIX}/totals-by-status`, { headers: { authorization: `Bearer ${users[i % users.length]}` } }));
    const events: ProgressEvent[] = [];
    try {
      const run = runProgressive(ctl.cutover, PREFIX, { steps: [50, 100], intervalMs: 4_000, threshold: 2, force: true, reason: 'test' }, (e) => {
        events.push(e);
        if (e.kind === 'step' && e.weight === 50) service.child.kill('SIGKILL');
      });
      await expect(run).rejects.toThrow(/automatic rollback after 2 failed analyses at 50%: analytics has 0 available instances/);
    } finally {
      await traffic.stop();
    }
    const analyses = events.filter((e): e is Extract<ProgressEvent, { kind: 'analysis' }> => e.kind === 'analysis');
    expect(analyses.length).toBe(2);
    expect(analyses[0].result.reason).toMatch(/^analytics has 0 available instances \(of 1\) now; in the interval [\d,]+ canary requests fell back to legacy/);
    expect(analyses[0].result.reason).not.toMatch(/only \d+ requests reached/);
    expect(gateway.routes.current().routes.find((r) => r.prefix === PREFIX)).toMatchObject({ mode: 'legacy' });
    // Every user was answered throughout: the canary's went to legacy.
    expect(traffic.statuses.filter((s) => s !== 200)).toEqual([]);
  }, 120_000);
});

describe('a service that dies during the bake after its switch', () => {
  let env: Awaited<ReturnType<typeof gatewayTestEnv>>;
  let config: ResolvedConfig;
  let legacyDb: string;
  let invoicesDb: string;
  let service: { url: string; child: ChildProcess };
  let legacy: Awaited<ReturnType<typeof startLegacyApp>>;
  let gateway: RunningGateway;
  let ctl: Awaited<ReturnType<typeof openCutover>>;
  const workers: SyncWorker[] = [];
  const PREFIX = '/api/invoices';

  beforeAll(async () => {
    env = await gatewayTestEnv('bake', []);
    legacyDb = await createTestDatabase('bake_legacy');
    await migrateLegacy(legacyDb);
    await seedLegacy(legacyDb, { users: 3, invoices: 20, seed: 3 });
    invoicesDb = await createTestDatabase('bake_invoices');
    const withDbs: ResolvedConfig = {
      ...env.config,
      legacy: { ...env.config.legacy, databaseUrl: legacyDb },
      services: env.config.services.map((s) => (s.name === 'invoices' ? { ...s, databaseUrl: invoicesDb, dependsOn: [], healthCheck: { ...s.healthCheck, intervalMs: 200, timeoutMs: 200 } } : s)),
    };
    // The real invoices service in its own process (it migrates its database as it starts).
    service = await spawnService(withDbs, 'invoices');
    legacy = await startLegacyApp(withDbs, { port: 0, logger: silentLogger });
    config = {
      ...withDbs,
      legacy: { ...withDbs.legacy, url: legacy.url },
      services: withDbs.services.map((s) => (s.name === 'invoices' ? { ...s, url: service.url } : s)),
    };
    const invoices = config.services.find((s) => s.name === 'invoices')!;
    for (const direction of ['forward', 'reverse'] as const) {
      const w = new SyncWorker({ config, service: invoices, logger: silentLogger, direction });
      workers.push(w);
      await w.start();
    }
    gateway = await startGateway(config, { port: 0, instanceId: 'bake-gw' });
    ctl = await openCutover(config, 'test-operator');
  }, 120_000);

  afterAll(async () => {
    service?.child.kill('SIGKILL');
    await gateway?.stop();
    await ctl?.close();
    for (const w of workers) await w.stop();
    const invoices = config?.services.find((s) => s.name === 'invoices');
    if (invoices) for (const d of ['forward', 'reverse'] as const) await cleanupPipeline(config, invoices, d).catch(() => undefined);
    await legacy?.close();
    await dropTestDatabase(invoicesDb).catch(() => undefined);
    await dropTestDatabase(legacyDb).catch(() => undefined);
    await env?.cleanup();
  });

  it('is rolled back by itself through the fence, and every write acknowledged before, during and after is on legacy', async () => {
    for (const kind of ['sync', 'shadow'] as const) await ctl.cutover.change(PREFIX, { kind }, { force: true, reason: 'test: straight to the switch' });
    await ctl.cutover.change(PREFIX, { kind: 'canary', weight: 50 }, { force: true, reason: 'test' });
    const users = await Promise.all(['1', '2', '3'].map((u) => token(config, u)));
    const acknowledged: number[] = [];
    const writers = users.map((t) =>
      load(gateway.url, async (i) => {
        const res = await fetch(`${gateway.url}${PREFIX}`, { method: 'POST', headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json' }, body: JSON.stringify({ customerName: `bake ${i}`, items: [{ description: 'work', quantity: 1, unitPrice: '10.00' }] }) });
        if (res.status === 201) acknowledged.push(((await res.clone().json()) as { id: number }).id);
        return res;
      }),
    );
    const events: BakeEvent[] = [];
    try {
      // Traffic before the switch: the bake's baseline is legacy's figures from before it.
      await waitFor('writes acknowledged before the switch', async () => acknowledged.length >= 10, 30_000, 50);
      const full = await ctl.cutover.change(PREFIX, { kind: 'full' }, { force: true, reason: 'test' });
      expect(full.to.phase).toBe('switched');
      const bake = runBake(ctl.cutover, PREFIX, { durationMs: 120_000, intervalMs: 2_000, threshold: 2 }, (e) => {
        events.push(e);
        // The service dies a moment after an analysis passed (as in the issue).
        if (e.kind === 'analysis' && e.result.ok && service.child.exitCode === null && !service.child.killed) service.child.kill('SIGKILL');
      });
      let status: Awaited<ReturnType<typeof ctl.cutover.store.status>> | undefined;
      await waitFor('the bake to be recorded', async () => !!(status = await ctl.cutover.store.status('invoices', PREFIX)).bake, 5_000, 50);
      expect(status).toMatchObject({ phase: 'switched', bake: { threshold: 2 } });
      await expect(bake).rejects.toThrow(/automatic rollback during the bake after 2 failed analyses: /);
      const after = acknowledged.length;
      // Writes go on, now on legacy.
      await waitFor('writes acknowledged after the rollback', async () => acknowledged.length >= after + 10, 30_000, 50);
    } finally {
      for (const w of writers) await w.stop();
    }
    const failed = events.filter((e): e is Extract<BakeEvent, { kind: 'analysis' }> => e.kind === 'analysis' && !e.result.ok);
    expect(failed.map((e) => e.result.reason).join('\n')).toMatch(/invoices has 0 available instances \(of 1\)|requests on \/api\/invoices could not be served by it \(\d+ found no instance|service error rate/);
    expect(gateway.routes.current().routes.find((r) => r.prefix === PREFIX)).toMatchObject({ mode: 'legacy', fenced: false });
    const history = await ctl.cutover.store.history(PREFIX, 3);
    expect(history.map((h) => `${h.command}:${h.outcome}`)).toEqual(['rollback (automatic):applied', 'fence: hold writes:applied', 'full:applied']);
    expect((await ctl.cutover.store.status('invoices', PREFIX)).bake).toBeNull();
    // 0 lost writes: every invoice a client was told was created is on legacy, which serves again.
    const db = new pg.Client({ connectionString: legacyDb });
    await db.connect();
    try {
      const { rows } = await db.query(`SELECT count(*)::int AS n FROM invoices WHERE id = ANY($1)`, [acknowledged]);
      expect(acknowledged.filter((id) => id > 1_000_000_000).length).toBeGreaterThan(0); // some were the service's
      expect(acknowledged.length - rows[0].n).toBe(0);
    } finally {
      await db.end();
    }
  }, 300_000);
});
