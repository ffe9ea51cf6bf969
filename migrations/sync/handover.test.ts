import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResolvedConfig, ResolvedService } from '../../core/config/load.ts';
import { silentLogger } from '../../core/logger.ts';
import { migrateService, seedLegacy } from '../../test/reference.ts';
import { waitFor } from '../../stack/ports.ts';
import { createTestDatabase, dropTestDatabase, legacyTestConfig } from '../../test/harness.ts';
import { startFeeds, type RunningFeeds } from './feeds.ts';
import { confirmHandover, emitHandover, feedStates } from './handover.ts';
import { cleanupPipeline, drainPipeline } from './status.ts';
import { SyncWorker } from './worker.ts';

/**
 * analytics keeps copies of invoices and invoice_items, which the invoices service owns. They
 * come from legacy until the invoices switch, from the invoices database after it, and from
 * legacy again after a rollback: each change once, none missed.
 */
let config: ResolvedConfig;
let invoices: ResolvedService;
let analytics: ResolvedService;
let cleanup: () => Promise<void>;
const workers: SyncWorker[] = [];
let feeds: RunningFeeds;
let reverse: SyncWorker;

// What analytics copies (metadata is excluded there), as one digest per database.
const DIGEST = `SELECT
  (SELECT md5(coalesce(string_agg(concat_ws('|', id, user_id, number, customer_name, status, total, tags::text, updated_at), ',' ORDER BY id), '')) FROM invoices) AS invoices,
  (SELECT md5(coalesce(string_agg(concat_ws('|', id, invoice_id, position, description, amount), ',' ORDER BY id), '')) FROM invoice_items) AS items`;

async function query<T = any>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(sql, params)).rows;
  } finally {
    await c.end();
  }
}

const digest = async (url: string) => JSON.stringify((await query(url, DIGEST))[0]);

/** n transactions as a handler makes them: a new invoice with an item, a status change, sometimes a delete. */
async function write(url: string, n: number, tag: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    for (let i = 0; i < n; i++) {
      await c.query('BEGIN');
      const { rows } = await c.query(`INSERT INTO invoices (user_id, number, customer_name, total) VALUES (1, $1, $2, $3) RETURNING id`, [`${tag}-${i}`, tag, `${i}.50`]);
      await c.query(`INSERT INTO invoice_items (invoice_id, position, description, quantity, unit_price, amount) VALUES ($1, 1, $2, 1, 1, 1)`, [rows[0].id, tag]);
      await c.query(`UPDATE invoices SET status = 'sent', updated_at = clock_timestamp() WHERE id = (SELECT min(id) FROM invoices WHERE status = 'draft')`);
      if (i % 4 === 3) {
        await c.query(`DELETE FROM invoice_items WHERE invoice_id = $1`, [rows[0].id]);
        await c.query(`DELETE FROM invoices WHERE id = $1`, [rows[0].id]);
      }
      await c.query('COMMIT');
    }
  } finally {
    await c.end();
  }
}

async function rowsApplied(pipeline: string): Promise<number> {
  const [r] = await query(analytics.databaseUrl, `SELECT rows_applied FROM strangler_sync.pipelines WHERE pipeline = $1`, [pipeline]);
  return Number(r.rows_applied);
}

/** A switchover's two steps back to back: the messages, then waiting for them to be applied. */
const handOver = async (to: 'owner' | 'legacy', waitMs: number) => confirmHandover(await emitHandover(config, invoices, to), waitMs);

/** The feed has applied everything the invoices database has. */
async function drainFeed() {
  const [{ lsn }] = await query(invoices.databaseUrl, `SELECT pg_current_wal_lsn()::text AS lsn`);
  await waitFor('the feed to catch up', async () => {
    const [r] = await query(analytics.databaseUrl, `SELECT applied_lsn IS NOT NULL AND applied_lsn >= $1::pg_lsn AS ok FROM strangler_sync.pipelines WHERE pipeline = 'analytics:feed:invoices'`, [lsn]);
    return r?.ok === true;
  }, 40_000);
}

/** The owner's writes are quiet and its sync drained both ways, as the switchover fence leaves them. */
async function quiesce() {
  expect(await drainPipeline(config, invoices, 'forward', 10_000)).not.toBeNull();
  expect(await drainPipeline(config, invoices, 'reverse', 10_000)).not.toBeNull();
}

beforeAll(async () => {
  const t = await legacyTestConfig('handover');
  await seedLegacy(t.config.legacy.databaseUrl, { users: 3, invoices: 40, seed: 5 });
  const urls = { invoices: await createTestDatabase('handover_inv'), analytics: await createTestDatabase('handover_an') };
  config = { ...t.config, services: t.config.services.map((s) => (s.name in urls ? { ...s, databaseUrl: urls[s.name as keyof typeof urls] } : s)) };
  invoices = config.services.find((s) => s.name === 'invoices')!;
  analytics = config.services.find((s) => s.name === 'analytics')!;
  await migrateService(invoices);
  await migrateService(analytics);
  for (const w of [new SyncWorker({ config, service: invoices, logger: silentLogger }), new SyncWorker({ config, service: analytics, logger: silentLogger })]) {
    workers.push(w);
    await w.start();
  }
  reverse = new SyncWorker({ config, service: invoices, logger: silentLogger, direction: 'reverse' });
  workers.push(reverse);
  await reverse.start();
  feeds = startFeeds(config, analytics, silentLogger, 200);
  await waitFor('the feed from invoices', async () => feeds.workers().length === 1, 20_000);
  cleanup = async () => {
    await feeds.stop();
    for (const w of workers) await w.stop();
    await cleanupPipeline(config, invoices).catch(() => undefined);
    await cleanupPipeline(config, invoices, 'reverse').catch(() => undefined);
    await cleanupPipeline(config, analytics).catch(() => undefined);
    for (const url of Object.values(urls)) await dropTestDatabase(url);
    await t.cleanup();
  };
}, 60_000);

afterAll(async () => {
  await cleanup?.();
});

describe('copies of a service tables follow its switch', () => {
  it('come from legacy before the switch, from the owner after it, from legacy after a rollback, and from the owner alone once the reverse sync stops', async () => {
    // Generous: the whole suite shares two cores. A timeout names both digests and the pipelines' errors.
    const equal = async (what: string, a: string, b: string) => {
      try {
        await waitFor(what, async () => (await digest(a)) === (await digest(b)), 40_000);
      } catch (err) {
        const errors = workers.concat(feeds.workers()).map((w) => `${w.plan?.pipeline}: ${w.lastError?.message ?? 'no error'}`);
        throw new Error(`${(err as Error).message}\n  ${await digest(a)}\n  ${await digest(b)}\n  ${errors.join('\n  ')}`);
      }
    };
    const legacyUrl = config.legacy.databaseUrl;

    // Before: legacy writes, and the service's canary writes (back to legacy by reverse sync).
    await write(legacyUrl, 8, 'legacy-before');
    await write(invoices.databaseUrl, 8, 'canary');
    await equal('legacy to have the canary writes', legacyUrl, invoices.databaseUrl);
    await equal('analytics to follow legacy', analytics.databaseUrl, legacyUrl);
    expect(await rowsApplied('analytics:feed:invoices')).toBe(0);
    expect((await feedStates(config, invoices)).find((f) => f.service === 'analytics')).toMatchObject({ exists: true, from: 'legacy' });

    // The switch: at a quiet moment, the copies move to the invoices database.
    await quiesce();
    const moved = await handOver('owner', 10_000);
    // templates and chat copy invoices too; their feeds do not run in this test.
    expect(moved.warnings.map((w) => w.split("'")[0]).sort()).toEqual(['chat', 'templates']);
    expect(moved.moved).toEqual([expect.objectContaining({ service: 'analytics', tables: ['invoices', 'invoice_items'], ms: expect.any(Number) })]);
    expect((await feedStates(config, invoices)).find((f) => f.service === 'analytics')).toMatchObject({ from: 'owner' });
    const forwardBefore = await rowsApplied('analytics:forward');

    await write(invoices.databaseUrl, 12, 'switched');
    await equal('analytics to follow the invoices database', analytics.databaseUrl, invoices.databaseUrl);
    await equal('legacy to have them too (reverse sync)', legacyUrl, invoices.databaseUrl);
    expect(await drainPipeline(config, analytics, 'forward', 10_000)).not.toBeNull();
    // The same rows reached legacy, but the forward sync left them to the feed: applied once.
    expect(await rowsApplied('analytics:forward')).toBe(forwardBefore);
    expect(await rowsApplied('analytics:feed:invoices')).toBeGreaterThan(0);
    await drainFeed();
    const feedAtSwitch = await rowsApplied('analytics:feed:invoices');

    // A rollback while the feed is behind (stopped): legacy takes the writes again at once, and
    // the forward sync must not apply them before the feed has applied the older ones.
    await feeds.stop();
    await write(invoices.databaseUrl, 8, 'behind');
    await quiesce();
    const pending = await emitHandover(config, invoices, 'legacy'); // the switchover releases writes here
    await write(legacyUrl, 8, 'rolled-back');
    // Newer changes of the very rows the feed has not applied yet: applied first, they would be overwritten.
    await query(legacyUrl, `UPDATE invoices SET status = 'paid', updated_at = clock_timestamp() WHERE number LIKE 'behind-%'`);
    await new Promise((r) => setTimeout(r, 500)); // room for the forward sync to run ahead, if it would
    expect(await rowsApplied('analytics:feed:invoices')).toBe(feedAtSwitch);
    feeds = startFeeds(config, analytics, silentLogger, 200);
    const confirmed = await confirmHandover(pending, 30_000);
    if (confirmed.moved[0]?.ms == null) {
      const state = await query(analytics.databaseUrl, `SELECT p.pipeline, p.applied_lsn::text, t.source, t.target, t.paused, t.handover_lsn::text FROM strangler_sync.pipelines p JOIN strangler_sync.tables t USING (pipeline)`);
      const errors = workers.concat(feeds.workers()).map((w) => `${w.plan?.pipeline}: ${w.state} ${w.lastError?.message ?? 'no error'}`);
      throw new Error(`handover not confirmed: ${JSON.stringify({ pending: pending.copies.map((c) => c.marks), state, errors }, null, 1)}`);
    }
    const feedBefore = await rowsApplied('analytics:feed:invoices');
    await equal('analytics to follow legacy again', analytics.databaseUrl, legacyUrl);
    await equal('the invoices database to follow legacy', invoices.databaseUrl, legacyUrl);
    expect(await rowsApplied('analytics:feed:invoices')).toBe(feedBefore);

    // Switched again, then finalized: the reverse sync stops and legacy falls behind, the copy does not.
    await quiesce();
    expect((await handOver('owner', 10_000)).moved.map((m) => m.service)).toEqual(['analytics']);
    await reverse.stop();
    await write(invoices.databaseUrl, 10, 'finalized');
    await equal('analytics to follow the invoices database alone', analytics.databaseUrl, invoices.databaseUrl);
    expect(await digest(legacyUrl)).not.toBe(await digest(invoices.databaseUrl));
    expect(await query(analytics.databaseUrl, `SELECT * FROM strangler_sync.conflicts`)).toEqual([]);

    // The forward sync starts over (its slot lost): it copies what it keeps, not what the feed keeps.
    const forward = workers.find((w) => w.plan?.pipeline === 'analytics:forward')!;
    await forward.stop();
    workers.splice(workers.indexOf(forward), 1);
    await cleanupPipeline(config, analytics);
    const again = new SyncWorker({ config, service: analytics, logger: silentLogger });
    workers.push(again);
    await again.start();
    expect(await query(analytics.databaseUrl, `SELECT source, paused FROM strangler_sync.tables WHERE pipeline = 'analytics:forward' AND source LIKE 'invoice%' ORDER BY source`)).toEqual([
      { source: 'invoice_items', paused: true },
      { source: 'invoices', paused: true },
    ]);
    await write(invoices.databaseUrl, 4, 'after-restart');
    await equal('analytics to still follow the invoices database', analytics.databaseUrl, invoices.databaseUrl);

    // The feed starts over (its slot lost) while it owns the copies: it copies them afresh from
    // the owner and follows it, instead of starting paused with nobody applying them.
    await feeds.stop();
    const [{ slot }] = await query(analytics.databaseUrl, `SELECT slot FROM strangler_sync.pipelines WHERE pipeline = 'analytics:feed:invoices'`);
    await query(invoices.databaseUrl, `SELECT pg_drop_replication_slot($1)`, [slot]);
    await write(invoices.databaseUrl, 4, 'while-the-feed-is-gone');
    feeds = startFeeds(config, analytics, silentLogger, 200);
    await waitFor('the feed again', async () => feeds.workers().length === 1, 20_000);
    await write(invoices.databaseUrl, 4, 'after-the-feed-restarts');
    await equal('analytics to follow the invoices database again', analytics.databaseUrl, invoices.databaseUrl);
  }, 240_000);

  it('leaves a copy on legacy, with a warning, when its feed does not run', async () => {
    const chat = config.services.find((s) => s.name === 'chat')!;
    const states = await feedStates(config, invoices);
    expect(states.find((s) => s.service === chat.name)).toMatchObject({ exists: false, from: 'legacy' });
    const { warnings } = await handOver('owner', 1_000);
    expect(warnings.join('\n')).toMatch(/chat's copies of invoices stay fed from legacy: its feed from invoices does not run yet \(strangler sync start chat starts it\)/);
  });
});
