import { SignJWT } from 'jose';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResolvedConfig } from '../core/config/load.ts';
import { startGateway, type RunningGateway } from '../gateway/start.ts';
import { waitFor } from '../stack/ports.ts';
import { runCli, writeConfig } from '../test/cli.ts';
import { analyticsCutoverEnv } from '../test/analytics-cutover.ts';
import type { gatewayTestEnv } from '../test/harness.ts';
import { openCutover } from './executor.ts';
import { runProgressive, type ProgressEvent } from './progressive.ts';

let gwEnv: Awaited<ReturnType<typeof gatewayTestEnv>>;
let analyticsDb: string;
let config: ResolvedConfig;
const gateways: RunningGateway[] = [];
let ctl: Awaited<ReturnType<typeof openCutover>>;
const PREFIX = '/api/analytics';

const token = (sub: string) => new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setIssuer('legacy').setExpirationTime('1h').sign(new TextEncoder().encode(config.legacy.jwtSecret));

/** Requests through both gateways, spread over many users, for shadow and canary figures. */
async function traffic(n: number, path = `${PREFIX}/totals-by-status`): Promise<number[]> {
  const statuses: number[] = [];
  for (let i = 0; i < n; i++) {
    const g = gateways[i % gateways.length];
    const res = await fetch(`${g.url}${path}`, { headers: { authorization: `Bearer ${await token(`u${i % 97}`)}` } });
    statuses.push(res.status);
    await res.arrayBuffer();
  }
  await Promise.all(gateways.map((g) => g.gateway.figures.flush()));
  return statuses;
}

/** Traffic until the gateways have compared `n` shadowed answers for analytics. */
async function shadowed(n: number): Promise<void> {
  const keys = ctl.cutover.probe(0).keys;
  for (let i = 0; i < 20; i++) {
    const h = await ctl.redis.hgetall(keys.shadowCounts('analytics'));
    if (Number(h.match ?? 0) + Number(h.mismatch ?? 0) >= n) return;
    await traffic(10);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Enters shadow (which measures afresh), gathers comparisons, then keeps traffic flowing until stopped. */
async function shadowThenLoad(): Promise<{ stop(): Promise<void> }> {
  await ctl.cutover.change(PREFIX, { kind: 'shadow' });
  await shadowed(25);
  let stop = false;
  const running = (async () => {
    while (!stop) await traffic(10);
  })();
  return {
    async stop() {
      stop = true;
      await running;
    },
  };
}

async function controlSnapshot(): Promise<string> {
  const c = new pg.Client({ connectionString: config.control.databaseUrl });
  await c.connect();
  try {
    const out: unknown[] = [];
    for (const t of ['route_version', 'routes', 'service_state', 'audit_log', 'check_results', 'prefix_locks']) {
      out.push((await c.query(`SELECT * FROM "${config.control.schema}".${t} ORDER BY 1`)).rows);
    }
    return JSON.stringify(out);
  } finally {
    await c.end();
  }
}

/**
 * Puts the prefix in the phase a test starts from (plain SQL, as an earlier run would have left
 * it) and waits for both gateways to follow, so that each test passes alone. Returns the last
 * audit id, to read only the rows the test itself writes.
 */
async function startFrom(phase: 'legacy' | 'rolled-back'): Promise<number> {
  const s = `"${config.control.schema}"`;
  const c = new pg.Client({ connectionString: config.control.databaseUrl });
  await c.connect();
  try {
    await c.query(`DELETE FROM ${s}.prefix_locks WHERE prefix = $1`, [PREFIX]);
    const { rows } = await c.query(`UPDATE ${s}.route_version SET version = version + 1 RETURNING version::int AS v`);
    await c.query(
      `INSERT INTO ${s}.routes (prefix, service, mode, weight, fenced, version) VALUES ($1, 'analytics', 'legacy', 0, false, $2)
       ON CONFLICT (prefix) DO UPDATE SET mode = 'legacy', weight = 0, methods = null, fenced = false, version = excluded.version`,
      [PREFIX, rows[0].v],
    );
    await c.query(`INSERT INTO ${s}.service_state (service, prefix, phase) VALUES ('analytics', $1, $2) ON CONFLICT (service) DO UPDATE SET phase = excluded.phase, progress = null`, [PREFIX, phase]);
    await Promise.all(gateways.map((g) => g.routes.refresh()));
    await waitFor(`both gateways to apply v${rows[0].v}`, async () => gateways.every((g) => g.routes.current().version >= rows[0].v), 10_000, 20);
    return Number((await c.query(`SELECT coalesce(max(id), 0) AS id FROM ${s}.audit_log`)).rows[0].id);
  } finally {
    await c.end();
  }
}

let stack: Awaited<ReturnType<typeof analyticsCutoverEnv>>;

beforeAll(async () => {
  stack = await analyticsCutoverEnv('cutover', PREFIX);
  ({ env: gwEnv, config, analyticsDb } = stack);
  gateways.push(await startGateway(config, { port: 0, instanceId: 'cut-a' }), await startGateway(config, { port: 0, instanceId: 'cut-b' }));
  ctl = await openCutover(config, 'test-operator');
}, 60_000);

afterAll(async () => {
  for (const g of gateways) await g.stop();
  await ctl?.close();
  await stack?.cleanup();
});

describe('cutover end to end, against real gateways, sync and control database', () => {
  it('refuses an illegal step with the legal ones, and an unknown prefix', async () => {
    await startFrom('legacy');
    await expect(ctl.cutover.change(PREFIX, { kind: 'canary', weight: 20 })).rejects.toThrow(/cannot set a canary of 20% while the service is in phase "legacy"; legal here: sync, rollback, promote/);
    await expect(ctl.cutover.change('/api/nope', { kind: 'shadow' })).rejects.toThrow(/unknown prefix "\/api\/nope"; known prefixes: \/api\/auth/);
  });

  it('changes nothing on --dry-run: the control database is the same before and after', async () => {
    await startFrom('legacy');
    const before = await controlSnapshot();
    const outcome = await ctl.cutover.change(PREFIX, { kind: 'sync' }, { dryRun: true });
    expect(outcome).toMatchObject({ dryRun: true, to: { phase: 'syncing' } });
    expect(outcome.checks.map((c) => [c.name, c.ok])).toEqual([['replication-ready', true]]);
    await expect(ctl.cutover.change(PREFIX, { kind: 'full' }, { dryRun: true })).rejects.toThrow(/legal here/);
    expect(await controlSnapshot()).toBe(before);
  });

  it('goes sync → shadow → canary 20 (acknowledged by both gateways) → rollback, with the audit trail', async () => {
    const since = await startFrom('legacy');
    const sync = await ctl.cutover.change(PREFIX, { kind: 'sync' });
    expect(sync.to.phase).toBe('syncing');
    const shadow = await ctl.cutover.change(PREFIX, { kind: 'shadow' });
    expect(shadow.propagation).toMatchObject({ acknowledged: 2, live: 2, complete: true });
    await expect(ctl.cutover.change(PREFIX, { kind: 'canary', weight: 20 })).rejects.toThrow(/shadow-mismatch: only \d+ shadowed requests compared/);
    await traffic(30);
    await shadowed(25); // shadow comparisons finish in the background
    const canary = await ctl.cutover.change(PREFIX, { kind: 'canary', weight: 20 });
    expect(canary.to).toEqual({ phase: 'canary', weight: 20, methods: null });
    expect(canary.propagation).toMatchObject({ acknowledged: 2, live: 2, complete: true });
    expect(gateways.every((g) => g.routes.current().routes.some((r) => r.prefix === PREFIX && r.mode === 'canary' && r.weight === 20))).toBe(true);
    await expect(ctl.cutover.rollback(PREFIX, '')).rejects.toThrow(/rollback needs --reason/);
    const back = await ctl.cutover.rollback(PREFIX, 'test: back to legacy');
    expect(back.to.phase).toBe('rolled-back');
    expect(back.propagation).toMatchObject({ acknowledged: 2, complete: true });
    expect(gateways.every((g) => g.routes.current().routes.some((r) => r.prefix === PREFIX && r.mode === 'legacy'))).toBe(true);
    const history = (await ctl.cutover.store.history(PREFIX, 20)).filter((h) => h.id > since);
    // The rollback holds writes (the fence), then flips the route.
    expect(history.map((h) => `${h.command}:${h.outcome}`)).toEqual(['rollback:applied', 'fence: hold writes:applied', 'canary 20:applied', 'canary 20:refused', 'shadow:applied', 'sync:applied']);
    expect(history[0]).toMatchObject({ actor: 'test-operator', reason: 'test: back to legacy', from_phase: 'canary', to_phase: 'rolled-back', to_route: { mode: 'legacy', fenced: false } });
    expect(history[1]).toMatchObject({ to_route: { mode: 'canary', weight: 20, fenced: true } });
    expect(back.writeHoldMs).toBeGreaterThanOrEqual(0);
    const checks = await ctl.pool.query(`SELECT name, ok FROM "${config.control.schema}".check_results WHERE audit_id = $1 ORDER BY id`, [history[2].id]);
    expect(checks.rows.map((r) => r.name)).toEqual(['service-health', 'sync-lag', 'sync-verified', 'depends-on-switched', 'gateways-reachable', 'id-ranges', 'shadow-mismatch']);
  });

  it('a read-only canary sends no write to the service: GETs go to it, POSTs stay on legacy, and a rollback clears the scope', async () => {
    await startFrom('rolled-back');
    const reads = await ctl.cutover.change(PREFIX, { kind: 'canary', weight: 100, methods: ['GET', 'HEAD'] });
    expect(reads.to).toEqual({ phase: 'canary', weight: 100, methods: ['GET', 'HEAD'] });
    expect(reads.actions.map((a) => a.kind)).toEqual(['set-route', 'record-phase']);
    expect(reads.checks.map((c) => c.name)).not.toContain('id-ranges');
    expect(reads.propagation).toMatchObject({ acknowledged: 2, live: 2, complete: true });
    expect((await ctl.cutover.store.status('analytics', PREFIX)).methods).toEqual(['GET', 'HEAD']);
    // What status and plan show: the scope, and a next step that keeps it.
    const { overview } = await import('./overview.ts');
    const row = (await overview(ctl.cutover, ctl.redis, ctl.cutover.probe(0).keys, config)).find((r) => r.prefix === PREFIX)!;
    expect(row).toMatchObject({ mode: 'canary', weight: 100, methods: ['GET', 'HEAD'], next: { refused: expect.stringMatching(/the other methods follow with their own canary/) } });
    const service = gwEnv.upstreams.analytics.seen;
    const legacy = gwEnv.legacy.seen;
    service.length = 0;
    legacy.length = 0;
    for (let i = 0; i < 12; i++) {
      const g = gateways[i % gateways.length];
      const headers = { authorization: `Bearer ${await token(`u${i}`)}`, 'content-type': 'application/json' };
      for (const method of ['GET', 'POST', 'HEAD', 'DELETE']) {
        const res = await fetch(`${g.url}${PREFIX}/reads-first`, { method, headers, body: method === 'POST' ? '{"x":1}' : undefined });
        await res.arrayBuffer();
      }
    }
    const onService = service.filter((r) => r.url.startsWith(PREFIX)).map((r) => r.method);
    const onLegacy = legacy.filter((r) => r.url.startsWith(PREFIX)).map((r) => r.method);
    expect(onService.filter((m) => m === 'GET')).toHaveLength(12);
    expect(onService.filter((m) => m === 'HEAD')).toHaveLength(12);
    expect(onService.filter((m) => m !== 'GET' && m !== 'HEAD')).toEqual([]);
    expect(onLegacy.filter((m) => m === 'POST')).toHaveLength(12);
    expect(onLegacy.filter((m) => m === 'DELETE')).toHaveLength(12);
    expect(onLegacy.filter((m) => m === 'GET' || m === 'HEAD')).toEqual([]);
    const back = await ctl.cutover.rollback(PREFIX, 'test: reads back to legacy');
    // Nobody wrote on the service: nothing to hold.
    expect(back.actions.map((a) => a.kind)).toEqual(['set-route', 'record-phase']);
    expect(await ctl.cutover.routeOf(PREFIX)).toMatchObject({ mode: 'legacy', methods: null });
  });

  it('refuses a second change of a prefix that is being changed', async () => {
    await ctl.cutover.store.lock(PREFIX, 'someone else', 'progressive canary', 60_000);
    try {
      await expect(ctl.cutover.change(PREFIX, { kind: 'shadow' })).rejects.toThrow(/is being changed by someone else \(progressive canary/);
    } finally {
      await ctl.cutover.store.unlock(PREFIX, 'someone else');
    }
  });

  it('runs a progressive canary to 100 with a healthy service', async () => {
    await startFrom('rolled-back');
    const load = await shadowThenLoad();
    const events: ProgressEvent[] = [];
    try {
      const shared = { ...ctl.cutover.thresholds };
      const outcome = await runProgressive(ctl.cutover, PREFIX, { steps: [50, 100], intervalMs: 1_500, threshold: 2, maxErrorRate: 3, maxP99Ms: 2_000 }, (e) => {
        events.push(e);
        // Its limits go with its own checks: the shared thresholds stay as they were meanwhile.
        expect(ctl.cutover.thresholds).toEqual(shared);
      });
      expect(outcome.to.phase).toBe('switched');
      const analyses = events.filter((e) => e.kind === 'analysis') as Array<{ result: { reason: string } }>;
      expect(analyses.length).toBeGreaterThan(0);
      expect(events.filter((e) => e.kind === 'step').map((e) => (e as { weight: number }).weight)).toEqual([50, 100]);
      expect(gateways.every((g) => g.routes.current().routes.some((r) => r.prefix === PREFIX && r.mode === 'service'))).toBe(true);
    } finally {
      await load.stop();
    }
  }, 30_000);

  it('--resume continues an interrupted progressive canary with its method scope, not all methods', async () => {
    await startFrom('rolled-back');
    const load = await shadowThenLoad();
    try {
      const { methodsOf } = await import('../cli/commands/cutover.ts');
      // The CLI's --resume without --methods keeps the canary's scope (undefined), never "all methods" (null).
      expect(methodsOf({ resume: true })).toBeUndefined();
      expect(methodsOf({})).toBeNull();
      const options = { steps: [25, 50, 100], intervalMs: 1_500, threshold: 2, maxErrorRate: 3, maxP99Ms: 2_000 };
      // The first run is interrupted during its first interval (as a killed CLI would be).
      const interrupted = runProgressive(ctl.cutover, PREFIX, { ...options, methods: ['GET', 'HEAD'] }, () => undefined, () => Promise.reject(new Error('the operator\'s terminal closed')));
      await expect(interrupted).rejects.toThrow(/terminal closed/);
      expect(await ctl.cutover.store.status('analytics', PREFIX)).toMatchObject({ phase: 'canary', weight: 25, methods: ['GET', 'HEAD'] });
      const events: ProgressEvent[] = [];
      const outcome = await runProgressive(ctl.cutover, PREFIX, { ...options, resume: true, methods: methodsOf({ resume: true }) }, (e) => events.push(e));
      expect(events.filter((e) => e.kind === 'step').map((e) => (e as { weight: number }).weight)).toEqual([50, 100]);
      // Every step kept the scope: at 100 the reads are on the service and the writes still on legacy.
      expect(outcome.to).toEqual({ phase: 'canary', weight: 100, methods: ['GET', 'HEAD'] });
      expect(await ctl.cutover.routeOf(PREFIX)).toMatchObject({ mode: 'canary', weight: 100, methods: ['GET', 'HEAD'] });
      const steps = (await ctl.cutover.store.history(PREFIX, 3)).map((h) => h.command);
      expect(steps.filter((c) => /canary/.test(c)).every((c) => c.includes('(GET,HEAD)'))).toBe(true);
    } finally {
      await load.stop();
    }
  }, 40_000);

  it('rolls back by itself within threshold intervals when the service answers 500s', async () => {
    await startFrom('rolled-back');
    const load = await shadowThenLoad();
    const events: ProgressEvent[] = [];
    try {
      const run = runProgressive(ctl.cutover, PREFIX, { steps: [50, 100], intervalMs: 1_500, threshold: 2, maxErrorRate: 1 }, (e) => {
        events.push(e);
        if (e.kind === 'step') gwEnv.upstreams.analytics.override.set(PREFIX, () => ({ status: 500, body: { error: { code: 'INTERNAL', message: 'boom' } } }));
      });
      await expect(run).rejects.toThrow(/automatic rollback after 2 failed analyses at 50%/);
      const analyses = events.filter((e) => e.kind === 'analysis') as Array<{ result: { reason: string } }>;
      expect(analyses).toHaveLength(2);
      // Its own --max-error-rate 1 judged the analyses that had enough requests (the shared thresholds have none);
      // once outlier detection ejected the instance for its 500s, the service had none left, which fails an analysis at once.
      for (const a of analyses.filter((x) => !/^only \d+ requests/.test(x.result.reason))) expect(a.result.reason).toMatch(/> max 1%|^analytics has 0 available instances \(of 1\) now; in the interval [\d,]+ canary requests fell back to legacy/);
      expect(events.at(-1)?.kind).toBe('rolled-back');
      expect(gateways.every((g) => g.routes.current().routes.some((r) => r.prefix === PREFIX && r.mode === 'legacy'))).toBe(true);
      expect((await ctl.cutover.store.history(PREFIX, 1))[0]).toMatchObject({ command: 'rollback (automatic)', to_phase: 'rolled-back' });
    } finally {
      await load.stop();
      gwEnv.upstreams.analytics.override.set(PREFIX, () => ({ status: 200, body: { items: [{ status: 'paid', invoices: 1, total: '1.00' }] } }));
    }
  }, 30_000);
});

describe('the cutover commands', () => {
  const run = (...args: string[]) => runCli(writeConfig(gwEnv.dir, config, 'cutover.yaml'), args, { env: { STRANGLER_ACTOR: 'cli-test' }, timeoutMs: 90_000 });

  it('checks a change\'s flags before any I/O: bad input is refused without a stack running', async () => {
    const { validateChange } = await import('../cli/commands/cutover.ts');
    const args = (more: Record<string, unknown>) => ({ config: '', prefix: PREFIX, ...more });
    await expect(validateChange(args({ canary: 150, dryRun: true }), config, 'cutover')).rejects.toThrow(/weight 150 is not a whole number between 0 and 100/);
    await expect(validateChange(args({ canary: 100 }), config, 'cutover')).rejects.toThrow(/a canary of 100% is a switch/);
    await expect(validateChange(args({ prefix: '/api/unknown', shadow: true }), config, 'cutover')).rejects.toMatchObject({ code: 'UNKNOWN_PREFIX' });
    await expect(validateChange(args({}), config, 'cutover')).rejects.toThrow(/exactly one of/);
    await expect(validateChange(args({ canary: 10, bake: '5m' }), config, 'cutover')).rejects.toThrow(/--bake follows a switch: use it with --full or --progressive/);
    await expect(validateChange(args({ full: true, bake: 'soon' }), config, 'cutover')).rejects.toThrow(/"soon" is not a duration/);
    await expect(validateChange(args({ progressive: true, steps: '5,50' }), config, 'cutover')).rejects.toThrow(/--steps must end at 100/);
    await expect(validateChange(args({}), config, 'rollback')).rejects.toThrow(/rollback needs --reason/);
    await expect(validateChange(args({ shadow: true, force: true }), config, 'cutover')).rejects.toThrow(/--force needs --reason/);
    expect(await validateChange(args({ canary: 10 }), config, 'cutover')).toEqual({ kind: 'canary', weight: 10, methods: null });
    // --methods: known HTTP methods only, uppercased, on a step that moves traffic.
    expect(await validateChange(args({ canary: 25, methods: 'get, head,GET' }), config, 'cutover')).toEqual({ kind: 'canary', weight: 25, methods: ['GET', 'HEAD'] });
    expect(await validateChange(args({ canary: 100, methods: 'GET,HEAD' }), config, 'cutover')).toEqual({ kind: 'canary', weight: 100, methods: ['GET', 'HEAD'] });
    expect(await validateChange(args({ full: true, methods: 'GET' }), config, 'cutover')).toEqual({ kind: 'full', methods: ['GET'] });
    await expect(validateChange(args({ canary: 25, methods: 'GET,FETCH' }), config, 'cutover')).rejects.toThrow(/unknown HTTP method FETCH in --methods; use any of GET, HEAD/);
    await expect(validateChange(args({ canary: 25, methods: ' , ' }), config, 'cutover')).rejects.toThrow(/--methods is empty/);
    await expect(validateChange(args({ shadow: true, methods: 'GET' }), config, 'cutover')).rejects.toThrow(/--methods scopes a step that moves traffic/);
    await expect(validateChange(args({ progressive: true, methods: 'GOT' }), config, 'cutover')).rejects.toThrow(/unknown HTTP method GOT/);
    await expect(validateChange(args({ full: true, methods: 'GET', bake: '5m' }), config, 'cutover')).rejects.toThrow(/no switch to bake/);
  });

  it('exit 2 with the reason on refusals and bad input; status, plan, history and diff print', async () => {
    await startFrom('rolled-back');
    const illegal = await run('finalize', PREFIX);
    expect(illegal.code).toBe(2);
    expect(illegal.stderr).toMatch(/cannot finalize while the service is in phase "rolled-back"; legal here: shadow, canary, rollback, promote/);
    const bad = await run('cutover', PREFIX, '--canary', '150', '--dry-run');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/weight 150 is not a whole number between 0 and 100/);
    const canary = await run('cutover', PREFIX, '--canary', '10', '--dry-run');
    expect(canary.code, canary.stderr).toBe(0);
    expect(canary.stdout).toMatch(/dry run: would canary 10 \/api\/analytics \(analytics\): rolled-back → canary 10%/);
    expect(canary.stdout).toMatch(/actions: start-reverse-sync → set-route canary 10% → record-phase/);
    const reads = await run('cutover', PREFIX, '--canary', '25', '--methods', 'get,head', '--dry-run');
    expect(reads.code, reads.stderr).toBe(0);
    expect(reads.stdout).toMatch(/dry run: would canary 25 \(GET,HEAD\) \/api\/analytics \(analytics\): rolled-back → canary 25% \(GET,HEAD\)/);
    expect(reads.stdout).toMatch(/actions: set-route canary 25% \(GET,HEAD\) → record-phase/);
    const status = await run('status');
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/\/api\/analytics\s+analytics\s+rolled-back\s+-\s+legacy/);
    const plan = await run('plan');
    expect(plan.stdout).toMatch(/5\. \/api\/analytics/);
    const history = await run('history', PREFIX, '--json');
    // Refusals are recorded too, under the actor that tried.
    expect(JSON.parse(history.stdout)[0]).toMatchObject({ actor: 'cli-test', outcome: 'refused', command: 'finalize' });
    const diff = await run('diff', PREFIX);
    expect(diff.stdout).toMatch(/\/api\/analytics: \d+ matched, \d+ noise .*, \d+ lagged .*, \d+ real mismatches/);
    expect(diff.stdout).toMatch(/noisy paths: none seen/);
    const rollback = await run('rollback', PREFIX, '--reason', 'cli test');
    expect(rollback.code, rollback.stderr).toBe(0);
    expect(rollback.stdout).toMatch(/applied on 2\/2 gateways in \d+ ms/);
    expect(JSON.parse((await run('history', PREFIX, '--json', '--limit', '1')).stdout)[0]).toMatchObject({ actor: 'cli-test', reason: 'cli test' });
  }, 240_000);
});

describe('reverse sync before writes', () => {
  it('refuses a canary or switch of a writing service whose reverse sync does not stream, and lets a read-only one go', async () => {
    const { actionProblems } = await import('./executor.ts');
    const invoices = { ...config.services.find((s) => s.name === 'invoices')!, databaseUrl: analyticsDb };
    const problems = await actionProblems(config, [{ kind: 'start-reverse-sync' }], invoices);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/reverse sync \(invoices → legacy\) does not run.*strangler sync start invoices --reverse/);
    expect(await actionProblems(config, [{ kind: 'start-reverse-sync' }], config.services.find((s) => s.name === 'analytics')!)).toEqual([]);
  });

  it('lets a reads-only canary of a writing service go without its reverse sync; its writes\' own canary needs it', async () => {
    const { actionProblems } = await import('./executor.ts');
    const { plan } = await import('./state-machine.ts');
    const invoices = { ...config.services.find((s) => s.name === 'invoices')!, databaseUrl: analyticsDb };
    const reads = plan({ phase: 'shadow', weight: 0 }, { kind: 'canary', weight: 25, methods: ['GET', 'HEAD'] });
    expect(reads.ok && (await actionProblems(config, reads.actions, invoices))).toEqual([]);
    const writes = plan({ phase: 'canary', weight: 25, methods: ['GET', 'HEAD'] }, { kind: 'canary', weight: 25, methods: null });
    expect(writes.ok && (await actionProblems(config, writes.actions, invoices))).toEqual([expect.stringMatching(/reverse sync \(invoices → legacy\) does not run/)]);
  });
});

describe('finalize guards', () => {
  it('refuses to finalize a service whose tables other services copy without a feed from it, naming them', async () => {
    const { actionProblems } = await import('./executor.ts');
    const { feedsOf } = await import('../migrations/sync/plan.ts');
    const invoices = config.services.find((s) => s.name === 'invoices')!;
    expect(feedsOf(config.services, invoices).map((d) => d.service.name).sort()).toEqual(['analytics', 'chat', 'templates']);
    const problems = await actionProblems(config, [{ kind: 'stop-reverse-sync' }], invoices);
    expect(problems).toHaveLength(3);
    const problem = problems.find((p) => p.startsWith('analytics'));
    expect(problem).toMatch(/analytics keeps a copy of invoices, invoice_items fed from legacy, and its feed from invoices does not run.*strangler sync start analytics/);
    expect(await actionProblems(config, [{ kind: 'stop-reverse-sync' }], config.services.find((s) => s.name === 'auth')!)).toEqual([]);
  });
});
