import pg from 'pg';
import type { Topology } from '../../../cli/dev/topology.ts';
import type { ResolvedConfig, ResolvedService } from '../../../core/config/load.ts';
import { silentLogger } from '../../../core/logger.ts';
import { openCutover, takesWrites } from '../../../cutover/executor.ts';
import { overview } from '../../../cutover/overview.ts';
import { shadowCompared } from '../../../cutover/probes.ts';
import { runProgressive } from '../../../cutover/progressive.ts';
import { runDoctor } from '../../../migrations/sync/doctor.ts';
import { startFeeds, type RunningFeeds } from '../../../migrations/sync/feeds.ts';
import { feedStates } from '../../../migrations/sync/handover.ts';
import { feedsOf } from '../../../migrations/sync/plan.ts';
import { waitFor } from '../../../stack/ports.ts';
import { recordVerification, verifyPipeline } from '../../../migrations/sync/verify.ts';
import { SyncWorker } from '../../../migrations/sync/worker.ts';
import { startLoad } from './load.ts';
import { formatInstances, readInstances } from '../../../gateway/instances-report.ts';
import { startService } from '../services/app.ts';

export interface StepTiming {
  step: string;
  ms: number;
}


/**
 * The main job, end to end: for each service in the roadmap's order, sync (backfill + stream),
 * verify, shadow, a progressive canary with analysis, switch; then a rollback and a second
 * cutover of one service; all under a background load of simulated users through the gateway.
 */
export async function runMigration(topology: Topology, say: (line: string) => void): Promise<boolean> {
  const { config } = topology;
  const gateway = topology.components.find((c) => c.name === 'gateway')!.url;
  const timings: StepTiming[] = [];
  const holds: Array<{ what: string; ms: number }> = [];
  const timed = async <T>(step: string, fn: () => Promise<T>): Promise<T> => {
    const t = Date.now();
    try {
      return await fn();
    } finally {
      timings.push({ step, ms: Date.now() - t });
    }
  };
  const workers: SyncWorker[] = [];
  const feeds: RunningFeeds[] = [];
  // Demo load is a few users, so an analysis interval needs fewer requests than the default 20.
  // They read the very lists they keep adding to: the shadow tells that noise (legacy's own
  // second answer differs too) and sync lag from mismatches, at the default 1 % threshold.
  const { cutover, redis, close } = await openCutover(config, 'demo', { ackTimeoutMs: 5_000, thresholds: { minCanaryRequests: 5, minShadowSamples: 10 } });
  const load = startLoad(gateway, { users: 8 });
  let ok = true;
  try {
    say('\ndoctor: is the legacy database ready for logical replication?');
    const findings = await runDoctor(config);
    for (const f of findings.slice(0, 4)) say(`  ${f.ok ? 'ok  ' : 'FAIL'} ${f.check}: ${f.detail}`);
    if (findings.some((f) => !f.ok)) throw new Error('doctor found problems');

    const migrate = async (service: ResolvedService, options: { steps: number[] }) => {
      say(`\n── ${service.prefix} → ${service.name} (:${service.port}) ──`);
      const worker = new SyncWorker({ config, service, logger: silentLogger });
      workers.push(worker);
      await timed(`${service.name}: sync (backfill)`, () => worker.start());
      // Its copies of another service's tables also get a feed from that service's database,
      // paused until that service's switch hands them over.
      const owners = config.services.filter((o) => feedsOf([service], o).length > 0);
      if (owners.length) {
        const running = startFeeds(config, service, silentLogger, 1_000);
        feeds.push(running);
        await waitFor(`${service.name}'s feeds`, async () => running.workers().length === owners.length, 20_000);
        say(`  feed: copies of ${owners.map((o) => o.name).join(', ')} tables also stream from ${owners.map((o) => o.databaseUrl.split('/').pop()).join(', ')}, paused until handed over`);
      }
      const state = await cutover.store.status(service.name, service.prefix);
      say(`  sync: slot ${worker.plan!.slot} streaming from ${worker.appliedLsn}`);
      const v = await timed(`${service.name}: verify`, () => verifyPipeline({ sourceUrl: config.legacy.databaseUrl, targetUrl: service.databaseUrl, plan: worker.plan! }));
      await recordVerification(service.databaseUrl, v);
      say(`  verify: ${v.tables.map((t) => `${t.table} ${t.sourceRows}=${t.targetRows}`).join(', ')} → ${v.ok ? 'equal' : 'DIFFERENT'} (${v.ms} ms)`);
      if (!v.ok) throw new Error(`verify of ${service.name} failed`);
      if (takesWrites(service)) {
        // Before the first write can reach the service: its writes must flow back to legacy.
        const reverse = new SyncWorker({ config, service, logger: silentLogger, direction: 'reverse' });
        workers.push(reverse);
        await timed(`${service.name}: reverse sync`, () => reverse.start());
        say(`  reverse sync: slot ${reverse.plan!.slot} streaming (${service.name} → legacy)`);
      }
      if (state.phase === 'legacy') await cutover.change(service.prefix, { kind: 'sync' });
      if (service.name === 'ocr') {
        // Warm the service's OCR engine (loading the traineddata takes ~0.5 s), as a deploy's
        // readiness step would, so the canary compares steady-state latency.
        const { renderTextPng } = await import('../monolith/ocr/text-image.ts');
        const login = await fetch(`${gateway}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'user1@example.test', password: 'password-1' }) });
        const { token } = (await login.json()) as { token: string };
        await fetch(`${service.url}/api/ocr`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ filename: 'warm.png', contentBase64: renderTextPng(['warm up']).toString('base64') }) });
      }
      const shadow = await timed(`${service.name}: shadow`, async () => {
        const o = await cutover.change(service.prefix, { kind: 'shadow' });
        await waitShadow(service.name, 10, 20_000);
        return o;
      });
      say(`  shadow: on ${shadow.propagation?.acknowledged}/${shadow.propagation?.live} gateways in ${shadow.propagation?.ms} ms; ${await shadowLine(service.name)}`);
      const outcome = await timed(`${service.name}: progressive canary ${options.steps.join('→')}`, () =>
        runProgressive(
          cutover,
          service.prefix,
          { steps: options.steps, intervalMs: 2_500, threshold: 4, maxErrorRate: 5, reason: 'demo' },
          (e) => {
            if (e.kind === 'step') {
              if (e.outcome.writeHoldMs !== undefined) holds.push({ what: `${service.name} switch`, ms: e.outcome.writeHoldMs });
              say(`  ${e.weight >= 100 ? 'switch' : `canary ${e.weight}%`}: on ${e.outcome.propagation?.acknowledged}/${e.outcome.propagation?.live} gateways in ${e.outcome.propagation?.ms} ms${e.outcome.writeHoldMs !== undefined ? `, writes held ${e.outcome.writeHoldMs} ms` : ''}`);
            }
            if (e.kind === 'analysis') say(`    analysis at ${e.weight}%: ${e.result.ok ? 'passed' : `failed (${e.failures}/${e.threshold})`}: ${e.result.reason}`);
            if (e.kind === 'rolled-back') say(`    ROLLED BACK: ${e.reason}`);
          },
        ),
      );
      say(`  ${service.prefix} is ${outcome.to.phase}`);
    };

    const order = [...config.services].sort((a, b) => a.order - b.order);
    for (const service of order) await migrate(service, { steps: [50, 100] });

    // The hard case: a service that has taken writes goes back to legacy, under load.
    const again = order.find((s) => s.name === 'invoices')!;
    say(`\n── rollback and second cutover of ${again.prefix} (it has taken writes) ──`);
    const back = await timed(`${again.name}: rollback`, () => cutover.rollback(again.prefix, 'demo: show that a rollback is one flag flip'));
    if (back.writeHoldMs !== undefined) holds.push({ what: `${again.name} rollback`, ms: back.writeHoldMs });
    say(`  rollback: ${back.from.phase} → ${back.to.phase}, on ${back.propagation?.acknowledged}/${back.propagation?.live} gateways in ${back.propagation?.ms} ms, writes held ${back.writeHoldMs} ms; the reverse sync had drained every write the service took`);
    await new Promise((r) => setTimeout(r, 2_000));
    const invoicesAfterRollback = [...load.figures.invoices];
    const legacyDb = new pg.Client({ connectionString: config.legacy.databaseUrl });
    await legacyDb.connect();
    const onLegacy = (await legacyDb.query(`SELECT count(*)::int AS n FROM invoices WHERE id = ANY($1)`, [invoicesAfterRollback])).rows[0].n;
    await legacyDb.end();
    say(`  after the rollback, legacy holds ${onLegacy} of the ${invoicesAfterRollback.length} invoices acknowledged so far (${invoicesAfterRollback.filter((id) => id > 1_000_000_000).length} of them created by the service)`);
    if (onLegacy !== invoicesAfterRollback.length) ok = false;
    await timed(`${again.name}: second cutover`, async () => {
      const v = await verifyPipeline({ sourceUrl: config.legacy.databaseUrl, targetUrl: again.databaseUrl, plan: workers.find((w) => w.plan?.service === again.name && w.plan.direction === 'forward')!.plan! });
      await recordVerification(again.databaseUrl, v);
      await cutover.change(again.prefix, { kind: 'shadow' });
      await waitShadow(again.name, 10, 20_000);
      await runProgressive(cutover, again.prefix, { steps: [50, 100], intervalMs: 2_500, threshold: 3, maxErrorRate: 5 }, (e) => {
        if (e.kind === 'step' && e.outcome.writeHoldMs !== undefined) holds.push({ what: `${again.name} second switch`, ms: e.outcome.writeHoldMs });
      });
    });
    say(`  second cutover: ${again.prefix} is ${(await cutover.store.status(again.name, again.prefix)).phase} again`);
    const copies = await feedStates(config, again);
    say(`  copies of its tables now come from: ${copies.map((c) => `${c.service} ← ${c.from === 'owner' ? again.databaseUrl.split('/').pop() : 'legacy'}`).join(', ')}`);
    if (copies.some((c) => c.from !== 'owner')) ok = false;

    // Invoices runs as two instances the gateway found in the registry: replace one under load.
    await timed(`${again.name}: rolling restart of an instance`, () => rollingRestart(topology, again, say));
  } catch (err) {
    ok = false;
    say(`\nmigration stopped: ${(err as Error).message}`);
  } finally {
    await load.stop();
  }

  // Every acknowledged invoice must be in the database that now serves /api/invoices.
  const invoicesService = config.services.find((s) => s.name === 'invoices')!;
  const phase = (await cutover.store.status(invoicesService.name, invoicesService.prefix)).phase;
  const servingUrl = phase === 'switched' || phase === 'finalized' ? invoicesService.databaseUrl : config.legacy.databaseUrl;
  const db = new pg.Client({ connectionString: servingUrl });
  await db.connect();
  const found = await db.query(`SELECT count(*)::int AS n FROM invoices WHERE id = ANY($1)`, [load.figures.invoices]);
  await db.end();
  const lost = load.figures.invoices.length - found.rows[0].n;
  // Every copy of the invoices (analytics, templates, chat) equals the database serving them.
  const stale = await staleCopies(config, servingUrl);

  say('\nstrangler status');
  const rows = await overview(cutover, redis, cutover.probe(0).keys, config, 60_000);
  for (const r of rows) say(`  ${r.prefix.padEnd(16)} ${r.service.padEnd(10)} ${r.phase.padEnd(12)} ${r.mode.padEnd(8)} gateways ${r.gateways.acknowledged}/${r.gateways.live} @v${r.gateways.version}  instances ${r.instances ? `${r.instances.available}/${r.instances.total}` : '-'}  sync ${r.sync.state} lag ${r.sync.lagBytes ?? '-'} B  reverse ${r.reverse ? `${r.reverse.state} lag ${r.reverse.lagBytes ?? '-'} B, ${r.reverse.conflicts} conflicts` : 'n/a'}  shadow ${r.shadow.mismatchPercent ?? '-'}% of ${r.shadow.compared}`);
  say('\nsummary');
  say(`  requests served through the gateway: ${load.figures.requests}, errors (5xx or no answer): ${load.figures.errors}${Object.keys(load.figures.errorsByPrefix).length ? ` ${JSON.stringify(load.figures.errorsByPrefix)}` : ''}`);
  say(`  invoices created and acknowledged: ${load.figures.invoices.length}; writes lost: ${lost} (checked against ${servingUrl.split('/').pop()})`);
  say(`  copies of the invoices equal to ${servingUrl.split('/').pop()}: ${stale.length ? `NO: ${stale.join(', ')}` : 'analytics, templates, chat'}`);
  say(`  OCR uploads: ${load.figures.ocrUploads}`);
  say(`  writes held at each switch: ${holds.map((h) => `${h.what} ${h.ms} ms`).join(', ') || 'none'}`);
  for (const t of timings) say(`  ${t.step.padEnd(44)} ${(t.ms / 1000).toFixed(1)} s`);

  for (const f of feeds) await f.stop();
  for (const w of workers) await w.stop();
  await close();
  return ok && lost === 0 && stale.length === 0;

  async function waitShadow(service: string, n: number, timeoutMs: number) {
    const until = Date.now() + timeoutMs;
    while (Date.now() < until) {
      const h = await redis.hgetall(cutover.probe(0).keys.shadowCounts(service));
      if (shadowCompared(h) >= n) return;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  async function shadowLine(service: string) {
    const h = await redis.hgetall(cutover.probe(0).keys.shadowCounts(service));
    return `${h.match ?? 0} answers matched, ${h.noise ?? 0} differed only where legacy differed from itself (noise), ${h.lagged ?? 0} matched once the sync caught up, ${h.mismatch ?? 0} differed`;
  }
}

/** The services whose copy of the invoices differs from `sourceUrl` after a settling wait. */
async function staleCopies(config: ResolvedConfig, sourceUrl: string): Promise<string[]> {
  const owner = config.services.find((s) => s.name === 'invoices')!;
  const digest = async (url: string, table: string) => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      return (await c.query(`SELECT md5(coalesce(string_agg(concat_ws('|', id, user_id, number, status, total, updated_at), ',' ORDER BY id), '')) AS d FROM "${table}"`)).rows[0].d as string;
    } finally {
      await c.end();
    }
  };
  let stale: string[] = [];
  for (let i = 0; i < 50; i++) {
    const want = await digest(sourceUrl, 'invoices');
    stale = [];
    for (const { service, mapping } of feedsOf(config.services, owner)) {
      const table = mapping.tables.find((t) => t.source === 'invoices')!.target;
      if ((await digest(service.databaseUrl, table)) !== want) stale.push(service.name);
    }
    if (!stale.length) return [];
    await new Promise((r) => setTimeout(r, 200));
  }
  return stale;
}

/**
 * `strangler services` for one service, then a rolling restart of its second instance under the
 * demo's load: a graceful stop (deregister, drain, finish in-flight requests) and a new instance
 * that registers and enters rotation after its first health check. The summary's error count
 * covers the requests served meanwhile.
 */
async function rollingRestart(topology: Topology, service: ResolvedService, say: (line: string) => void): Promise<void> {
  const { config } = topology;
  const { Redis } = await import('ioredis');
  const { redisKeys } = await import('../../../gateway/redis-keys.ts');
  const redis = new Redis(config.redis.url);
  const keys = redisKeys(config.redis.keyPrefix);
  const view = async () => (await readInstances(config, redis, keys)).filter((s) => s.service === service.name);
  try {
    const second = topology.components.findIndex((c) => c.name === `${service.name}#2`);
    if (second < 0) return;
    say(`\n── ${service.name} instances (strangler services) ──`);
    for (const line of formatInstances(await view()).split('\n')) say(`  ${line}`);
    const t = Date.now();
    await topology.components[second].close();
    const next = await startService(config, service.name, { port: 0, logger: silentLogger });
    topology.components[second] = { name: `${service.name}#2`, url: next.url, close: next.close };
    await waitFor('the new instance to enter rotation', async () => (await view())[0].instances.some((i) => i.id === next.registration?.instance.id && Object.keys(i.health).length > 0 && Object.values(i.health).every((h) => h === 'healthy')), 10_000, 50);
    say(`  rolling restart: ${service.name}#2 stopped gracefully (deregistered, drained) and replaced by ${next.registration?.instance.id} at ${next.url}, in rotation after ${Date.now() - t} ms`);
    await new Promise((r) => setTimeout(r, 1_500));
    const after = (await view())[0];
    say(`  requests in the last minute per instance: ${after.instances.map((i) => `${i.id} ${i.recentRequests}${i.recentFailures ? ` (${i.recentFailures} failed)` : ''}`).join(', ')}`);
  } finally {
    redis.disconnect();
  }
}
