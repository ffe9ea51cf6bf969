import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResolvedConfig, ResolvedService } from '../../core/config/load.ts';
import { silentLogger } from '../../core/logger.ts';
import { seedLegacy } from '../../test/reference.ts';
import { waitFor } from '../../stack/ports.ts';
import { dropTestDatabase, ROOT } from '../../test/harness.ts';
import { syncEnv, syncWorker, syncWorkers, type SyncEnv } from '../../test/sync-env.ts';
import { runDoctor } from './doctor.ts';
import { pipelineStore } from './pipeline-store.ts';
import { cleanupPipeline, requestStop, syncStatus } from './status.ts';
import { verifyPipeline } from './verify.ts';
import { SyncWorker } from './worker.ts';

type Env = SyncEnv;
const env = syncEnv;
const workers = syncWorkers;
const worker = syncWorker;

/** The running worker of the env's service, started when no earlier test left one running (each test runs alone too). */
async function running(e: Env): Promise<SyncWorker> {
  const active = workers.find((x) => x.plan?.service === e.service.name && x.state === 'active');
  if (active) return active;
  const w = worker(e);
  await w.start();
  return w;
}

async function verified(e: Env) {
  const w = workers.find((x) => x.plan?.service === e.service.name && x.state === 'active');
  const { buildSyncPlan } = await import('./plan.ts');
  const { readSourceTables } = await import('./catalog.ts');
  const plan = w?.plan ?? buildSyncPlan(e.service, await readSourceTables(e.legacy, e.service.tables.map((t) => t.source)), e.config.legacy.databaseUrl);
  return verifyPipeline({ sourceUrl: e.config.legacy.databaseUrl, targetUrl: e.service.databaseUrl, plan, chunkRows: 50 });
}

/** Random writes to invoices and items, as the monolith would make them, until stopped. */
function writeLoad(e: Env, client: pg.Client) {
  const me = Math.random().toString(36).slice(2, 8); // numbers unique across concurrent writers
  let stop = false;
  let n = 0;
  const run = (async () => {
    while (!stop) {
      n++;
      try {
        await once();
      } catch (err) {
        // Several writers may deadlock on the rows they pick at random, as a monolith's can: that one rolls back.
        if ((err as { code?: string }).code !== '40P01') throw err;
        await client.query('ROLLBACK');
      }
    }
  })();
  async function once() {
    await client.query('BEGIN');
    const { rows } = await client.query(
      `INSERT INTO invoices (user_id, number, customer_name, total, tags, metadata) VALUES (1, $1, 'Load', $2, '{a,b}', '{"k": [1, 2]}') RETURNING id`,
      [`LOAD-${Date.now()}-${me}-${n}`, `${n}.25`],
    );
    await client.query(`INSERT INTO invoice_items (invoice_id, position, description, quantity, unit_price, amount) VALUES ($1, 1, 'x', 1, 1, 1)`, [rows[0].id]);
    await client.query(`UPDATE invoices SET status = 'sent', updated_at = clock_timestamp() WHERE id = (SELECT id FROM invoices ORDER BY random() LIMIT 1)`);
    if (n % 5 === 0) await client.query(`DELETE FROM invoices WHERE id = (SELECT max(id) FROM invoices WHERE customer_name = 'Load')`);
    await client.query('COMMIT');
  }
  return {
    get count() {
      return n;
    },
    async stop() {
      stop = true;
      await run;
    },
  };
}

afterAll(async () => {
  for (const w of workers) await w.stop();
});

/** Runs `fn` while four writers commit back to back on legacy (the worker always has a group collecting); each must have written. */
async function whileWriting(e: Env, fn: () => Promise<void>): Promise<void> {
  const writers = Array.from({ length: 4 }, () => new pg.Client({ connectionString: e.config.legacy.databaseUrl }));
  await Promise.all(writers.map((w) => w.connect()));
  const loads = writers.map((w) => writeLoad(e, w));
  try {
    await fn();
  } finally {
    for (const load of loads) await load.stop();
    await Promise.all(writers.map((w) => w.end()));
  }
  expect(loads.every((load) => load.count > 0)).toBe(true);
}

/** The worker is not held: a change made now reaches the service. */
async function goesOn(e: Env, marker: string): Promise<void> {
  await e.legacy.query(`UPDATE invoices SET customer_name = $1 WHERE id = 4`, [marker]);
  await waitFor('the worker to go on', async () => (await e.target.query(`SELECT customer_name FROM invoices WHERE id = 4`)).rows[0].customer_name === marker, 10_000, 20);
}

describe('sync: backfill and streaming', () => {
  let e: Env;
  beforeAll(async () => {
    e = await env('sync_main');
  });
  afterAll(async () => e?.cleanup());

  it('backfills while the monolith keeps writing, streams what follows, and verifies equal', async () => {
    const writer = new pg.Client({ connectionString: e.config.legacy.databaseUrl });
    await writer.connect();
    const load = writeLoad(e, writer);
    const progress: number[] = [];
    const w = worker(e, { onProgress: (p) => progress.push(p.rows) });
    await w.start();
    await new Promise((r) => setTimeout(r, 500));
    await load.stop();
    await writer.end();
    expect(load.count).toBeGreaterThan(5);
    expect(progress.length).toBeGreaterThan(0);
    const v = await verified(e);
    expect(v.tables.map((t) => [t.table, t.ok])).toEqual([['invoices', true], ['invoice_items', true]]);
    expect(v.tables[0].sourceRows).toBeGreaterThan(200);
    const status = await syncStatus(e.config, e.service);
    expect(status).toMatchObject({ state: 'streaming', active: true, lastError: null });
    // Lag in bytes is a WAL distance: it counts what other databases of this shared cluster
    // wrote since the last applied commit (other test files, at once) until a heartbeat passes.
    await waitFor('the lag in bytes to settle under 1 MB', async () => ((await syncStatus(e.config, e.service)).lagBytes ?? Infinity) < 1024 * 1024, 15_000, 100);
  });

  it('carries numeric, timestamptz to the microsecond, jsonb, arrays and NULLs exactly', async () => {
    await running(e);
    const { rows } = await e.legacy.query(
      `INSERT INTO invoices (user_id, number, customer_name, customer_email, total, tags, metadata, paid_at)
       VALUES (2, 'TYPES-1', 'Types', NULL, 1234567890.12, '{"with space","comma,inside",NULL}', '{"nested": {"a": [1, "two", null]}, "n": 1.50}', '2026-01-02 03:04:05.123456+00') RETURNING id`,
    );
    await waitFor('the insert to arrive', async () => (await e.target.query(`SELECT 1 FROM invoices WHERE id = $1`, [rows[0].id])).rowCount === 1, 5_000, 20);
    const row = `SELECT total::text, tags::text, metadata::text, paid_at::text, customer_email FROM invoices WHERE id = $1`;
    expect((await e.target.query(row, [rows[0].id])).rows[0]).toEqual((await e.legacy.query(row, [rows[0].id])).rows[0]);
  });

  it('applies a large transaction whole', async () => {
    await running(e);
    await e.legacy.query(`INSERT INTO invoices (user_id, number, customer_name) SELECT 3, 'BULK-' || g, 'Bulk' FROM generate_series(1, 20000) g`);
    await waitFor('20,000 rows', async () => Number((await e.target.query(`SELECT count(*) FROM invoices WHERE customer_name = 'Bulk'`)).rows[0].count) === 20000, 30_000, 50);
    await e.legacy.query(`DELETE FROM invoices WHERE customer_name = 'Bulk'`);
    await waitFor('the delete', async () => Number((await e.target.query(`SELECT count(*) FROM invoices WHERE customer_name = 'Bulk'`)).rows[0].count) === 0, 30_000, 50);
  }, 60_000);

  it('names the key range of a tampered target row, and passes again once repaired', async () => {
    await running(e);
    const { rows } = await e.target.query(`SELECT id, total FROM invoices ORDER BY id OFFSET 120 LIMIT 1`);
    await e.target.query(`UPDATE invoices SET total = total + 1 WHERE id = $1`, [rows[0].id]);
    const v = await verified(e);
    const inv = v.tables.find((t) => t.table === 'invoices')!;
    expect(inv.ok).toBe(false);
    const { from, to } = inv.firstMismatch!;
    expect(Number(from?.[0] ?? 0)).toBeLessThan(rows[0].id);
    expect(to === null || Number(to[0]) >= rows[0].id).toBe(true);
    await e.target.query(`UPDATE invoices SET total = $2 WHERE id = $1`, [rows[0].id, rows[0].total]);
    expect((await verified(e)).ok).toBe(true);
  });

  it('verifies at one point of the source\'s history while the monolith keeps writing: no false difference', async () => {
    await running(e);
    await whileWriting(e, async () => {
      const v = await verified(e);
      expect(v, JSON.stringify(v.tables)).toMatchObject({ verdict: 'verified', consistent: true, ok: true });
      expect(v.point).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    });
    // The hold is released: the worker goes on.
    await goesOn(e, 'after the verify');
  });

  it('runs two verifies asked for at once, under writes, one after the other: both verified, and the worker goes on', async () => {
    await running(e);
    await whileWriting(e, async () => {
      // Operators at once: a later one must neither move an earlier one's hold nor wait on a worker that stands for it.
      const all = await Promise.all([verified(e), verified(e), verified(e)]);
      for (const v of all) expect(v, JSON.stringify(v)).toMatchObject({ verdict: 'verified', consistent: true, ok: true });
    });
    await goesOn(e, 'after three verifies');
  });

  it('pauses for a hold asked for again while it stands for the one before (released and asked for between two of its looks)', async () => {
    const w = await running(e);
    const store = pipelineStore(w.plan!.pipeline);
    try {
      await store.requestHold(e.target, 30_000);
      await waitFor('the worker to pause', async () => (await store.hold(e.target)).held !== null, 10_000, 20);
      const point = (await e.legacy.query(`SELECT pg_current_wal_lsn()::text AS lsn`)).rows[0].lsn as string;
      await store.holdAt(e.target, point);
      await waitFor('the worker to stand at the point', async () => (await store.hold(e.target)).held === point, 10_000, 20);
      // A new request while it stands is what a release and a request between two of its looks leave.
      await store.requestHold(e.target, 30_000);
      await waitFor('the worker to pause for the next hold', async () => (await store.hold(e.target)).held !== null, 10_000, 20);
    } finally {
      await store.releaseHold(e.target);
    }
    await goesOn(e, 'after the next hold');
  });

  it('lists every differing key range, narrowed down, with the count', async () => {
    await running(e);
    const { rows } = await e.target.query(`SELECT id FROM invoices ORDER BY id`);
    const tampered = [rows[10].id, rows[100].id, rows[rows.length - 2].id];
    for (const id of tampered) await e.target.query(`UPDATE invoices SET customer_name = 'tampered' WHERE id = $1`, [id]);
    try {
      const inv = (await verified(e)).tables.find((t) => t.table === 'invoices')!;
      expect(inv.mismatchCount).toBe(3);
      for (const id of tampered) {
        const hit = inv.mismatches.find((m) => Number(m.from?.[0] ?? 0) < id && (m.to === null || Number(m.to[0]) >= id));
        expect(hit, `a range holding ${id}`).toBeDefined();
        expect(hit!.sourceRows).toBeLessThanOrEqual(50);
      }
    } finally {
      const source = await e.legacy.query(`SELECT id, customer_name FROM invoices WHERE id = ANY($1)`, [tampered]);
      for (const r of source.rows) await e.target.query(`UPDATE invoices SET customer_name = $2 WHERE id = $1`, [r.id, r.customer_name]);
    }
    expect((await verified(e)).ok).toBe(true);
  });

  it('says the pipeline is lagging, by how much, instead of calling ranges different, when the worker cannot reach the verify\'s point', async () => {
    const w = await running(e);
    const holder = new pg.Client({ connectionString: e.service.databaseUrl });
    await holder.connect();
    try {
      // The worker is stuck behind a lock on the service database.
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM invoices WHERE id = 6 FOR UPDATE`);
      await e.legacy.query(`UPDATE invoices SET customer_name = 'stuck' WHERE id = 6`);
      const v = await verifyPipeline({ sourceUrl: e.config.legacy.databaseUrl, targetUrl: e.service.databaseUrl, plan: w.plan!, chunkRows: 50, catchUpTimeoutMs: 1_500 });
      expect(v).toMatchObject({ verdict: 'lagging', ok: false, tables: [] });
      expect(v.note).toMatch(/[\d.]+ MB of WAL behind its source; nothing was compared/);
    } finally {
      await holder.query('ROLLBACK');
      await holder.end();
    }
    await waitFor('the stuck change', async () => (await e.target.query(`SELECT customer_name FROM invoices WHERE id = 6`)).rows[0].customer_name === 'stuck', 10_000, 20);
    expect((await verified(e)).ok).toBe(true);
  });

  it('goes on collecting while the group before it waits on the target, and commits what it collected as one group (group commit)', async () => {
    await running(e);
    const ids = (await e.legacy.query(`SELECT id FROM invoices ORDER BY id LIMIT 12`)).rows.map((r) => r.id as number);
    const [blocked, ...rest] = ids;
    const holder = new pg.Client({ connectionString: e.service.databaseUrl });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM invoices WHERE id = $1 FOR UPDATE`, [blocked]);
      // The group with this change waits on the lock; the writes after it come 60 ms apart,
      // each past the group's idle time and, together, past its first age limit (100 ms).
      await e.legacy.query(`UPDATE invoices SET customer_name = 'group commit' WHERE id = $1`, [blocked]);
      await waitFor('the group to wait on the lock', async () => (await e.target.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`)).rows[0].n > 0, 10_000, 10);
      for (const id of rest) {
        await e.legacy.query(`UPDATE invoices SET customer_name = 'group commit' WHERE id = $1`, [id]);
        await new Promise((r) => setTimeout(r, 60));
      }
    } finally {
      await holder.query('ROLLBACK');
      await holder.end();
    }
    await waitFor('every change', async () => (await e.target.query(`SELECT count(*)::int AS n FROM invoices WHERE id = ANY($1) AND customer_name = 'group commit'`, [ids])).rows[0].n === ids.length, 10_000, 20);
    // Everything written while the first group waited went in with one target transaction.
    const { rows } = await e.target.query(`SELECT DISTINCT xmin::text AS x FROM invoices WHERE id = ANY($1)`, [rest]);
    expect(rows).toHaveLength(1);
  });

  it('refuses a second worker for the same pipeline', async () => {
    await running(e);
    const second = worker(e);
    await expect(second.start()).rejects.toThrow(/another sync worker already runs pipeline invoices:forward/);
  });

  it('empties the target table on TRUNCATE', async () => {
    await running(e);
    await e.legacy.query(`TRUNCATE invoice_items`);
    await waitFor('the truncate', async () => Number((await e.target.query(`SELECT count(*) FROM invoice_items`)).rows[0].count) === 0, 5_000, 20);
  });

  it('with no worker running and changes waiting in its slot, says lagging rather than different', async () => {
    const w = await running(e);
    const plan = w.plan!;
    await w.stop();
    await e.legacy.query(`UPDATE invoices SET customer_name = 'while no worker runs' WHERE id = 9`);
    const v = await verifyPipeline({ sourceUrl: e.config.legacy.databaseUrl, targetUrl: e.service.databaseUrl, plan, chunkRows: 50 });
    expect(v).toMatchObject({ verdict: 'lagging', consistent: false });
    expect(v.note).toMatch(/no worker runs .* holds changes not applied yet/);
    const again = worker(e);
    await again.start();
    await waitFor('the waiting change', async () => (await e.target.query(`SELECT customer_name FROM invoices WHERE id = 9`)).rows[0].customer_name === 'while no worker runs', 10_000, 20);
  });

  it('stops when asked through its control row, and resumes from the stored LSN', async () => {
    const w = await running(e);
    expect(await requestStop(e.config, e.service)).toBe(true);
    await waitFor('the worker to stop', async () => w.state === 'stopped', 5_000, 50);
    await e.legacy.query(`UPDATE invoices SET customer_name = 'While stopped' WHERE id = 5`);
    const again = worker(e);
    await again.start();
    await waitFor('the change made while stopped', async () => (await e.target.query(`SELECT customer_name FROM invoices WHERE id = 5`)).rows[0].customer_name === 'While stopped', 5_000, 20);
    expect((await verified(e)).ok).toBe(true);
  });
});

describe('sync: templates (TOAST)', () => {
  let e: Env;
  beforeAll(async () => {
    e = await env('sync_toast', 'templates');
  });
  afterAll(async () => e?.cleanup());

  it('keeps an out-of-line body when an update leaves it alone', async () => {
    const w = worker(e);
    await w.start();
    const { rows } = await e.legacy.query(`SELECT id, md5(body) AS sum, length(body) AS len FROM templates ORDER BY id LIMIT 1`);
    expect(rows[0].len).toBeGreaterThan(2000);
    await e.legacy.query(`UPDATE templates SET name = 'Renamed' WHERE id = $1`, [rows[0].id]);
    await waitFor('the rename', async () => (await e.target.query(`SELECT name FROM templates WHERE id = $1`, [rows[0].id])).rows[0].name === 'Renamed', 5_000, 20);
    expect((await e.target.query(`SELECT md5(body) AS sum FROM templates WHERE id = $1`, [rows[0].id])).rows[0].sum).toBe(rows[0].sum);
    expect((await verified(e)).ok).toBe(true);
    await w.stop();
  });
});

describe('sync: refusing before harm', () => {
  it('refuses a table without a primary key, in doctor and in sync start, and creates nothing on the legacy database', async () => {
    const e = await env('sync_nopk', 'invoices', (s) => ({ ...s, tables: [...s.tables, { source: 'audit_trail', target: 'audit_trail', columns: {}, exclude: [], replica: false }] }));
    try {
      await e.legacy.query(`CREATE TABLE audit_trail (at timestamptz, what text)`);
      const findings = await runDoctor(e.config);
      const finding = findings.find((f) => f.check === 'table audit_trail (invoices)')!;
      expect(finding.ok).toBe(false);
      expect(finding.fix).toMatch(/^ALTER TABLE audit_trail ADD PRIMARY KEY/);
      // The fix says what to run, not the problem again.
      expect(finding.fix).not.toMatch(/no primary key/);
      expect(finding.detail).toMatch(/has no primary key or replica identity/);
      expect(findings.find((f) => f.check === 'wal_level')!.ok).toBe(true);
      await expect(worker(e).start()).rejects.toThrow(/legacy table "audit_trail" has no primary key or replica identity.*ALTER TABLE audit_trail/s);
      expect((await e.legacy.query(`SELECT count(*)::int AS n FROM pg_publication`)).rows[0].n).toBe(0);
      expect((await e.legacy.query(`SELECT count(*)::int AS n FROM pg_replication_slots WHERE database = current_database()`)).rows[0].n).toBe(0);
      // The monolith's own UPDATEs on the table still work.
      await e.legacy.query(`INSERT INTO audit_trail VALUES (now(), 'x')`);
      await e.legacy.query(`UPDATE audit_trail SET what = 'y'`);
    } finally {
      await e.cleanup();
    }
  });
});

describe('sync: databases that do not exist yet', () => {
  it('creates the service database on start, and says what to start first when a reverse sync finds none', async () => {
    const e = await env('sync_nodb');
    const missing = `${e.service.databaseUrl}_new`;
    const service = { ...e.service, databaseUrl: missing };
    const config = { ...e.config, services: e.config.services.map((s) => (s.name === service.name ? service : s)) };
    try {
      const reverse = new SyncWorker({ config, service, direction: 'reverse', logger: silentLogger });
      workers.push(reverse);
      await expect(reverse.start()).rejects.toThrow(/service database of invoices \("t_sync_nodb_svc_[0-9a-f]+_new"\) does not exist yet: start its forward sync first \(strangler sync start invoices\)/);
      const forward = new SyncWorker({ config, service, logger: silentLogger });
      workers.push(forward);
      await forward.start();
      const target = new pg.Client({ connectionString: missing });
      await target.connect();
      expect((await target.query(`SELECT count(*)::int AS n FROM invoices`)).rows[0].n).toBeGreaterThan(0);
      await target.end();
      await forward.stop();
      await cleanupPipeline(config, service);
    } finally {
      await dropTestDatabase(missing).catch(() => undefined);
      await e.cleanup();
    }
  });
});

describe('sync: ids the service hands out (issue 20)', () => {
  const invoicesOnly = (s: ResolvedService): ResolvedService => ({ ...s, tables: s.tables.filter((t) => t.source === 'invoices') });

  it('refuses a service database made by plain SQL with serial keys, with the statements, and fixes it with --fix-sequences', async () => {
    const e = await env('sync_serial', 'invoices', invoicesOnly);
    try {
      // The service's own schema, written by hand: serial ids from 1, like the monolith's.
      await e.target.query(`CREATE TABLE invoices (
        id serial PRIMARY KEY, user_id integer NOT NULL, number text NOT NULL, customer_name text NOT NULL, customer_email text,
        status text NOT NULL DEFAULT 'draft', currency character(3) NOT NULL DEFAULT 'EUR', issue_date date NOT NULL DEFAULT current_date, due_date date,
        subtotal numeric(12,2) NOT NULL DEFAULT 0, tax_rate numeric(5,2) NOT NULL DEFAULT 0, tax numeric(12,2) NOT NULL DEFAULT 0, total numeric(12,2) NOT NULL DEFAULT 0,
        tags text[] NOT NULL DEFAULT '{}', metadata jsonb NOT NULL DEFAULT '{}', paid_at timestamptz, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())`);
      await expect(worker(e).start()).rejects.toThrow(/could collide with the monolith's.*invoices\.id takes ids from public\.invoices_id_seq at 1 .*run: ALTER SEQUENCE public\.invoices_id_seq MINVALUE 1000000001 START WITH 1000000001 RESTART WITH 1000000001;.*--fix-sequences/s);
      const doctor = (await runDoctor(e.config)).find((f) => f.check === 'ids invoices.invoices')!;
      expect(doctor).toMatchObject({ ok: false, fix: expect.stringMatching(/^ALTER SEQUENCE public\.invoices_id_seq .*--fix-sequences/) });
      const w = worker(e, { fixSequences: true });
      await w.start();
      expect((await runDoctor(e.config)).find((f) => f.check === 'ids invoices.invoices')).toMatchObject({ ok: true });
      // A service that never calls the toolkit: its own INSERT takes the default.
      const { rows } = await e.target.query(`INSERT INTO invoices (user_id, number, customer_name) VALUES (1, 'SVC-1', 'From the service') RETURNING id`);
      expect(rows[0].id).toBe(1_000_000_001);
      await w.stop();
    } finally {
      await e.cleanup();
    }
  });

  it('gives the tables it creates itself a sequence in the service range', async () => {
    const e = await env('sync_ownids', 'invoices', invoicesOnly);
    try {
      const w = worker(e);
      await w.start();
      const { rows } = await e.target.query(
        `INSERT INTO invoices (user_id, number, customer_name, status, currency, issue_date, subtotal, tax_rate, tax, total, tags, metadata, created_at, updated_at)
         SELECT user_id, 'SVC-2', customer_name, status, currency, issue_date, subtotal, tax_rate, tax, total, tags, metadata, created_at, updated_at FROM invoices LIMIT 1 RETURNING id`,
      );
      expect(rows[0].id).toBeGreaterThanOrEqual(1_000_000_001);
      await w.stop();
    } finally {
      await e.cleanup();
    }
  });
});

describe('sync: a table added to the mapping later', () => {
  it('backfills the new table without disturbing the others', async () => {
    const e = await env('sync_add', 'invoices', (s) => ({ ...s, tables: s.tables.filter((t) => t.source === 'invoices') }));
    try {
      const first = worker(e);
      await first.start();
      await first.stop();
      await e.legacy.query(`INSERT INTO invoice_items (invoice_id, position, description, quantity, unit_price, amount) VALUES (1, 99, 'added later', 1, 1, 1)`);
      const full = { ...e.service, tables: e.config.services.find((s) => s.name === 'invoices')!.tables.length === 1 ? [...e.service.tables, { source: 'invoice_items', target: 'invoice_items', columns: {}, exclude: [], replica: false }] : e.service.tables };
      const e2 = { ...e, service: full, config: { ...e.config, services: e.config.services.map((s) => (s.name === 'invoices' ? full : s)) } };
      const second = worker(e2);
      await second.start();
      await e.legacy.query(`UPDATE invoice_items SET description = 'changed after' WHERE position = 99`);
      await e.legacy.query(`UPDATE invoices SET customer_name = 'still streaming' WHERE id = 2`);
      await waitFor('both changes', async () => (await e.target.query(`SELECT description FROM invoice_items WHERE position = 99`)).rows[0]?.description === 'changed after' && (await e.target.query(`SELECT customer_name FROM invoices WHERE id = 2`)).rows[0].customer_name === 'still streaming', 5_000, 20);
      expect((await verified(e2)).ok).toBe(true);
      await second.stop();
    } finally {
      await e.cleanup();
    }
  });
});

describe('sync: crashes', () => {
  it('survives SIGKILL of the worker under write load: no loss, no duplicate', async () => {
    const e = await env('sync_kill');
    const spawnWorker = () => {
      const child = spawn(process.execPath, ['--import', 'tsx', resolve(ROOT, 'test/fixtures/sync-worker.ts'), 'invoices'], {
        env: { ...process.env, STRANGLER_TEST_CONFIG: JSON.stringify(e.config) },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const up = new Promise<void>((ok, fail) => {
        child.stdout.on('data', (d) => String(d).includes('streaming') && ok());
        child.once('exit', (code) => fail(new Error(`worker exited ${code}`)));
      });
      return { child, up };
    };
    try {
      const writer = new pg.Client({ connectionString: e.config.legacy.databaseUrl });
      await writer.connect();
      const load = writeLoad(e, writer);
      const a = spawnWorker();
      await a.up;
      await new Promise((r) => setTimeout(r, 400));
      a.child.kill('SIGKILL');
      await new Promise((r) => a.child.once('exit', r));
      await new Promise((r) => setTimeout(r, 200));
      const b = spawnWorker();
      await b.up;
      await new Promise((r) => setTimeout(r, 300));
      await load.stop();
      await writer.end();
      const v = await verified(e);
      expect(v.ok, JSON.stringify(v.tables)).toBe(true);
      b.child.kill('SIGTERM');
      await new Promise((r) => b.child.once('exit', r));
    } finally {
      await e.cleanup();
    }
  }, 60_000);
});

/** A legacy database with the reference schema and the invoices service's database, on a private server of their own. */
async function privateServer(invoices: number): Promise<{ cluster: import('../../stack/postgres-cluster.ts').PostgresCluster; config: ResolvedConfig; service: ResolvedService }> {
  const { PostgresCluster } = await import('../../stack/postgres-cluster.ts');
  const { migrateLegacy } = await import('../../test/reference.ts');
  const { loadConfig } = await import('../../core/config/load.ts');
  const cluster = await PostgresCluster.start({ ephemeral: true });
  await cluster.createDatabase('legacy');
  await cluster.createDatabase('svc_invoices');
  const config = loadConfig(resolve(ROOT, 'strangler.yaml'), { postgresUrl: cluster.baseUrl, logLevel: 'silent' });
  await migrateLegacy(config.legacy.databaseUrl);
  await seedLegacy(config.legacy.databaseUrl, { users: 2, invoices, seed: 1 });
  return { cluster, config, service: config.services.find((s) => s.name === 'invoices')! };
}

describe('sync: adjacent commits (issue 18)', () => {
  it('loses no transaction whose commit record starts exactly where the last applied one ends, when the worker restarts there', async () => {
    // Regression: the worker acknowledged the end of its last applied commit + 1 byte (the
    // replication library's acknowledge adds one). When the next commit record starts exactly
    // at that end (back-to-back commits of two sessions), PostgreSQL skipped that transaction
    // when the worker resumed ("has been already streamed, forwarding to …"): it was lost.
    // A server of its own: nothing else writes WAL between the two commits.
    const { cluster, config, service } = await privateServer(5);
    try {
      // No heartbeat messages: they would sit between the two commits.
      const w = new SyncWorker({ config, service, logger: silentLogger, heartbeatIntervalMs: 3_600_000 });
      workers.push(w);
      await w.start();
      const connect = async (url: string) => {
        const c = new pg.Client({ connectionString: url });
        await c.connect();
        return c;
      };
      const [a, b, holder, admin] = await Promise.all([connect(config.legacy.databaseUrl), connect(config.legacy.databaseUrl), connect(service.databaseUrl), connect(service.databaseUrl)]);
      try {
        // The service database holds row 2 locked: the worker will apply A and wait on B.
        await holder.query('BEGIN');
        await holder.query(`SELECT 1 FROM invoices WHERE id = 2 FOR UPDATE`);
        // WAL: B's update, A's update, A's commit, B's commit: two adjacent commit records.
        await b.query('BEGIN');
        await b.query(`UPDATE invoices SET customer_name = 'B' WHERE id = 2`);
        await a.query('BEGIN');
        await a.query(`UPDATE invoices SET customer_name = 'A' WHERE id = 1`);
        await a.query('COMMIT');
        await b.query('COMMIT');
        // The worker's connection waits on the lock; end it, as a crash there would.
        let waiting: number | undefined;
        await waitFor('the worker to wait on the locked row', async () => {
          const { rows } = await admin.query(`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`);
          waiting = rows[0]?.pid;
          return waiting !== undefined;
        }, 10_000, 20);
        await admin.query(`SELECT pg_terminate_backend($1)`, [waiting]);
        await holder.query('ROLLBACK');
        await waitFor('both transactions on the service', async () => {
          const { rows } = await admin.query(`SELECT id, customer_name FROM invoices WHERE id IN (1, 2) ORDER BY id`);
          return rows[0]?.customer_name === 'A' && rows[1]?.customer_name === 'B';
        }, 15_000, 50);
      } finally {
        await Promise.all([a, b, holder, admin].map((c) => c.end().catch(() => undefined)));
      }
      await w.stop();
    } finally {
      await cluster.destroy();
    }
  }, 60_000);
});

describe('sync: the legacy server restarts', () => {
  it('reconnects after a PostgreSQL restart under the worker and catches up', async () => {
    const { cluster, config, service } = await privateServer(20);
    try {
      const w = new SyncWorker({ config, service, logger: silentLogger });
      workers.push(w);
      await w.start();
      await cluster.restart();
      const legacy = new pg.Client({ connectionString: config.legacy.databaseUrl });
      await legacy.connect();
      await legacy.query(`UPDATE invoices SET customer_name = 'after restart' WHERE id = 1`);
      await legacy.end();
      const target = new pg.Client({ connectionString: service.databaseUrl });
      await target.connect();
      await waitFor('the change after the restart', async () => (await target.query(`SELECT customer_name FROM invoices WHERE id = 1`)).rows[0].customer_name === 'after restart', 20_000, 100);
      await target.end();
      expect(w.state).toBe('active');
      const status = await syncStatus(config, service);
      expect(status.lastError).toMatch(/terminat|connection|shut/i);
      await w.stop();
    } finally {
      await cluster.destroy();
    }
  }, 60_000);
});

describe('sync: both directions', () => {
  it('carries service writes back to legacy, and nothing echoes (replication origins)', async () => {
    const e = await env('sync_reverse');
    try {
      const { migrateService } = await import('../../test/reference.ts');
      await migrateService(e.service); // the service's own schema: defaults and its id range
      const forward = worker(e);
      await forward.start();
      const reverse = worker(e, { direction: 'reverse' });
      await reverse.start();
      const rowsApplied = async (pipeline: string, url: string) => {
        const c = new pg.Client({ connectionString: url });
        await c.connect();
        const r = await c.query(`SELECT rows_applied::int AS n FROM strangler_sync.pipelines WHERE pipeline = $1`, [pipeline]);
        await c.end();
        return r.rows[0].n as number;
      };
      const fwdBefore = await rowsApplied('invoices:forward', e.service.databaseUrl);
      // A write the service takes (its id range) reaches legacy...
      await e.target.query(`INSERT INTO invoices (id, user_id, number, customer_name) VALUES (1000000001, 1, 'INV-1000000001', 'From the service')`);
      await e.target.query(`INSERT INTO invoice_items (id, invoice_id, position, description, quantity, unit_price, amount) VALUES (1000000001, 1000000001, 1, 'x', 1, 1, 1)`);
      await waitFor('the service write on legacy', async () => (await e.legacy.query(`SELECT 1 FROM invoice_items WHERE id = 1000000001`)).rowCount === 1, 10_000, 20);
      // ...and a legacy write reaches the service, each exactly once.
      await e.legacy.query(`UPDATE invoices SET customer_name = 'From legacy' WHERE id = 3`);
      await waitFor('the legacy write on the service', async () => (await e.target.query(`SELECT customer_name FROM invoices WHERE id = 3`)).rows[0].customer_name === 'From legacy', 10_000, 20);
      await new Promise((r) => setTimeout(r, 700));
      // The forward pipeline applied the one legacy row, not the echo of the service's two rows.
      expect((await rowsApplied('invoices:forward', e.service.databaseUrl)) - fwdBefore).toBe(1);
      expect(await rowsApplied('invoices:reverse', e.config.legacy.databaseUrl)).toBe(2);
      expect((await verified(e)).ok).toBe(true);
      const status = await syncStatus(e.config, e.service, 'reverse');
      expect(status).toMatchObject({ state: 'streaming', active: true });
      await reverse.stop();
      await cleanupPipeline(e.config, e.service, 'reverse');
    } finally {
      await e.cleanup();
    }
  });

  it('detects a row written on both sides within the lag: the later commit wins on both sides, and the conflict is recorded', async () => {
    const e = await env('sync_conflict');
    try {
      const { migrateService } = await import('../../test/reference.ts');
      await migrateService(e.service);
      const forward = worker(e);
      await forward.start();
      const reverse = worker(e, { direction: 'reverse' });
      await reverse.start();
      // The service writes row 7 while the reverse sync is down (a lag), then legacy writes it later.
      await reverse.stop();
      await e.target.query(`UPDATE invoices SET customer_name = 'service wrote first' WHERE id = 7`);
      await new Promise((r) => setTimeout(r, 20));
      await e.legacy.query(`UPDATE invoices SET customer_name = 'legacy wrote later' WHERE id = 7`);
      await waitFor('the later legacy write on the service', async () => (await e.target.query(`SELECT customer_name FROM invoices WHERE id = 7`)).rows[0].customer_name === 'legacy wrote later', 10_000, 20);
      // The reverse sync comes back with the older service write: legacy keeps its later one.
      const again = worker(e, { direction: 'reverse' });
      await again.start();
      const conflicts = async () => (await e.legacy.query(`SELECT table_name, key, kind, resolution FROM strangler_sync.conflicts WHERE pipeline = 'invoices:reverse'`)).rows;
      await waitFor('the conflict to be recorded', async () => (await conflicts()).length === 1, 10_000, 20);
      expect((await conflicts())[0]).toMatchObject({ table_name: 'invoices', key: { id: '7' }, kind: 'update', resolution: expect.stringMatching(/later/) });
      expect((await e.legacy.query(`SELECT customer_name FROM invoices WHERE id = 7`)).rows[0].customer_name).toBe('legacy wrote later');
      expect((await syncStatus(e.config, e.service, 'reverse')).conflicts).toBe(1);
      expect((await verified(e)).ok).toBe(true);
      await again.stop();
      await cleanupPipeline(e.config, e.service, 'reverse');
    } finally {
      await e.cleanup();
    }
  });

  it('keeps a target write that was still in progress when an older source change arrived (no lost update)', async () => {
    const e = await env('sync_conflict_inflight');
    try {
      const { migrateService } = await import('../../test/reference.ts');
      await migrateService(e.service);
      const forward = worker(e);
      await forward.start();
      // The service's transaction has row 8 locked, uncommitted; legacy changes row 8 and commits
      // first; the forward sync must wait for the service's commit and then keep its later write.
      const local = new pg.Client({ connectionString: e.service.databaseUrl });
      await local.connect();
      try {
        await local.query('BEGIN');
        await local.query(`UPDATE invoices SET customer_name = 'service, committed later' WHERE id = 8`);
        await e.legacy.query(`UPDATE invoices SET customer_name = 'legacy, committed first' WHERE id = 8`);
        await new Promise((r) => setTimeout(r, 500)); // the forward sync reaches row 8 and waits on it
        await local.query('COMMIT');
      } finally {
        await local.end();
      }
      const conflicts = async () => (await e.target.query(`SELECT key, kind FROM strangler_sync.conflicts WHERE pipeline = 'invoices:forward'`)).rows;
      await waitFor('the conflict to be recorded', async () => (await conflicts()).length === 1, 10_000, 20);
      expect((await conflicts())[0]).toMatchObject({ key: { id: '8' }, kind: 'update' });
      expect((await e.target.query(`SELECT customer_name FROM invoices WHERE id = 8`)).rows[0].customer_name).toBe('service, committed later');
      await forward.stop();
    } finally {
      await e.cleanup();
    }
  });

  it('refuses reverse sync for a read-only service', async () => {
    const e = await env('sync_reverse_ro', 'analytics');
    try {
      await expect(worker(e, { direction: 'reverse' }).start()).rejects.toThrow(/owns no tables it writes/);
    } finally {
      await e.cleanup();
    }
  });
});
