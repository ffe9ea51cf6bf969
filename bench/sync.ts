/**
 * `npm run bench:sync`: the sync engine against native logical replication (CREATE PUBLICATION /
 * CREATE SUBSCRIPTION between two databases of the same private cluster), in the same run:
 * backfill rows/s (ours: COPY in the slot's snapshot; native: copy_data), streaming apply rows/s
 * for a burst of writes to the invoice tables, and the lag (p50, p99) under a steady load of
 * 1,000 row changes/s. Targets (sync issue): backfill ≥ 1.0× native, apply ≥ 0.5×, lag p99 ≤ 1 s.
 * Then an OLTP workload (bench/sync-oltp.ts): 8 pgbench clients of one-row transactions, our
 * sustained apply rate against a native subscription's, and both lags at 80 % of the slower
 * one's capacity. Target (issue 18): ≥ 1.0× native's transactions/s, lag p99 ≤ 1 s.
 * BENCH_SYNC=oltp runs only that part.
 */
import pg from 'pg';
import { loadConfig } from '../core/config/load.ts';
import { silentLogger } from '../core/logger.ts';
import { migrateLegacy } from '../test/reference.ts';
import { readSourceTables } from '../migrations/sync/catalog.ts';
import { buildSyncPlan, targetTableDdl } from '../migrations/sync/plan.ts';
import { SyncWorker } from '../migrations/sync/worker.ts';
import { PostgresCluster } from '../stack/postgres-cluster.ts';
import { resolve } from 'node:path';
import { oltpBench } from './sync-oltp.ts';

const INVOICES = Number(process.env.BENCH_INVOICES ?? 100_000);
const BURST = Number(process.env.BENCH_BURST ?? 50_000);
const LOAD_SECONDS = Number(process.env.BENCH_LOAD_SECONDS ?? 10);
const say = (line: string) => process.stdout.write(`${line}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function client(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  return c;
}

async function count(c: pg.Client, table: string): Promise<number> {
  return Number((await c.query(`SELECT count(*) AS n FROM ${table}`)).rows[0].n);
}

function pct(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))] ?? 0;
}

async function oltp(): Promise<void> {
  const cluster = await PostgresCluster.start({ ephemeral: true });
  try {
    const config = loadConfig(resolve(import.meta.dirname, '../strangler.yaml'), { postgresUrl: cluster.baseUrl, logLevel: 'silent' });
    const r = await oltpBench(cluster, config, say);
    const fmt = (n: number) => n.toFixed(0).padStart(9);
    say(`\nsync bench, OLTP: ${r.transactions} one-row transactions from 8 pgbench clients (${r.loadTps.toFixed(0)}/s unthrottled); lag at ${r.lagRate}/s; one private cluster, this machine\n`);
    say(`measure                      ours     native    ratio   target`);
    say(`OLTP apply transactions/s ${fmt(r.ours.tps)}  ${fmt(r.native.tps)}   ${(r.ours.tps / r.native.tps).toFixed(2)}×    ≥ 1.0×   (an applier that keeps up scores the load's rate)`);
    say(`OLTP lag p50 ms         ${fmt(r.ours.lagP50)}  ${fmt(r.native.lagP50)}`);
    say(`OLTP lag p99 ms         ${fmt(r.ours.lagP99)}  ${fmt(r.native.lagP99)}            ≤ 1000 ms`);
    const ms = (n: number) => (n * 1000).toFixed(0).padStart(9);
    say(`OLTP CPU ms per 1,000 tx ${ms(r.cpuPerKtx.ours + r.cpuPerKtx.oursNode)}  ${ms(r.cpuPerKtx.native)}            (walsender + applying backend; ours ${ms(r.cpuPerKtx.ours).trim()} in Postgres, ${ms(r.cpuPerKtx.oursNode).trim()} in Node)`);
    const c = r.catchUp;
    say(`catch-up transactions/s  ${fmt(c.ours)}  ${fmt(c.native)}   ${(c.ours / c.native).toFixed(2)}×             (a backlog of ${c.transactions}, both appliers started at once)`);
    const k = c.cpuPerKtx;
    const one = (n: number) => (n * 1000).toFixed(1);
    say(`catch-up CPU ms/1,000 tx ${ms(k.oursWalsender + k.oursBackend + k.oursNode)}  ${ms(k.nativeWalsender + k.nativeApply)}            (ours: walsender ${one(k.oursWalsender)}, target backend ${one(k.oursBackend)}, Node ${one(k.oursNode)}; native: walsender ${one(k.nativeWalsender)}, apply worker ${one(k.nativeApply)})`);
  } finally {
    await cluster.destroy();
  }
}

async function main(): Promise<void> {
  const cluster = await PostgresCluster.start({ ephemeral: true });
  try {
    for (const db of ['legacy', 'svc_invoices', 'native_invoices']) await cluster.createDatabase(db);
    const config = loadConfig(resolve(import.meta.dirname, '../strangler.yaml'), { postgresUrl: cluster.baseUrl, logLevel: 'silent' });
    const service = config.services.find((s) => s.name === 'invoices')!;
    await migrateLegacy(config.legacy.databaseUrl);
    const legacy = await client(config.legacy.databaseUrl);
    say(`seeding ${INVOICES} invoices with 3 items each…`);
    await legacy.query(`INSERT INTO users (email, password_hash) VALUES ('bench@example.test', 'x')`);
    await legacy.query(
      `INSERT INTO invoices (user_id, number, customer_name, customer_email, status, subtotal, tax, total, tags, metadata)
       SELECT 1, 'B-' || g, 'Customer ' || (g % 500), 'c' || (g % 500) || '@example.test', 'sent', g % 1000, 0, g % 1000, '{a,b}', jsonb_build_object('po', g)
         FROM generate_series(1, ${INVOICES}) g`,
    );
    await legacy.query(`INSERT INTO invoice_items (invoice_id, position, description, quantity, unit_price, amount) SELECT i.id, p, 'Item ' || p, 1, 10, 10 FROM invoices i, generate_series(1, 3) p`);
    await legacy.query('ANALYZE');
    const rows = INVOICES * 4;

    // Native: publication, a slot made beforehand (same cluster), a subscription with copy_data.
    const native = await client(cluster.url('native_invoices'));
    const plan = buildSyncPlan(service, await readSourceTables(legacy, ['invoices', 'invoice_items']), config.legacy.databaseUrl);
    for (const t of plan.tables) await native.query(targetTableDdl(t));
    await legacy.query(`CREATE PUBLICATION bench_native FOR TABLE invoices, invoice_items`);
    await legacy.query(`SELECT pg_create_logical_replication_slot('bench_native', 'pgoutput')`);
    let t0 = Date.now();
    await native.query(`CREATE SUBSCRIPTION bench_native CONNECTION '${config.legacy.databaseUrl}' PUBLICATION bench_native WITH (create_slot = false, slot_name = 'bench_native', copy_data = true)`);
    for (;;) {
      const { rows: r } = await native.query(`SELECT count(*) FILTER (WHERE srsubstate <> 'r') AS pending, count(*) AS n FROM pg_subscription_rel`);
      if (Number(r[0].n) === 2 && Number(r[0].pending) === 0) break;
      await sleep(20);
    }
    const nativeBackfillMs = Date.now() - t0;

    // Ours.
    t0 = Date.now();
    const worker = new SyncWorker({ config, service, logger: silentLogger });
    await worker.start();
    const oursBackfillMs = Date.now() - t0;
    const svc = await client(service.databaseUrl);

    // Streaming apply: a burst of BURST inserted invoices (with an item each) in transactions of 1,000.
    const caughtUp = async (c: pg.Client, expectInvoices: number) => {
      while ((await count(c, 'invoices')) < expectInvoices) await sleep(10);
    };
    const base = await count(legacy, 'invoices');
    t0 = Date.now();
    for (let done = 0; done < BURST; done += 1000) {
      await legacy.query(
        `WITH ins AS (INSERT INTO invoices (user_id, number, customer_name, total) SELECT 1, 'S-' || g, 'Stream', 1 FROM generate_series(${done + 1}, ${done + 1000}) g RETURNING id)
         INSERT INTO invoice_items (invoice_id, position, description, quantity, unit_price, amount) SELECT id, 1, 'x', 1, 1, 1 FROM ins`,
      );
    }
    const writtenMs = Date.now() - t0;
    await Promise.all([caughtUp(svc, base + BURST), caughtUp(native, base + BURST)]);
    const tOurs = Date.now();
    // Measure each separately: the second one waited for the first.
    const applyOurs = tOurs - t0;
    let applyNative = applyOurs;
    {
      // Re-measure native alone on a second burst while ours also applies: both see the same load.
      const base2 = await count(legacy, 'invoices');
      const t1 = Date.now();
      await legacy.query(
        `WITH ins AS (INSERT INTO invoices (user_id, number, customer_name, total) SELECT 1, 'T-' || g, 'Stream2', 1 FROM generate_series(1, ${BURST}) g RETURNING id)
         INSERT INTO invoice_items (invoice_id, position, description, quantity, unit_price, amount) SELECT id, 1, 'x', 1, 1, 1 FROM ins`,
      );
      const doneAt: Record<string, number> = {};
      await Promise.all([
        caughtUp(svc, base2 + BURST).then(() => (doneAt.ours = Date.now() - t1)),
        caughtUp(native, base2 + BURST).then(() => (doneAt.native = Date.now() - t1)),
      ]);
      applyNative = doneAt.native;
      say(`one transaction of ${BURST * 2} rows: ours ${doneAt.ours} ms, native ${doneAt.native} ms`);
    }

    // Lag under a steady load of ~1,000 row changes/s (invoice + item per insert, 500 inserts/s).
    const committed = new Map<string, number>();
    const lags: number[] = [];
    const nativeLags: number[] = [];
    const seen = new Set<string>();
    const seenNative = new Set<string>();
    let stop = false;
    const writer = (async () => {
      let n = 0;
      const start = Date.now();
      while (!stop) {
        const number = `L-${n++}`;
        await legacy.query(`WITH ins AS (INSERT INTO invoices (user_id, number, customer_name, total) VALUES (1, $1, 'Lag', 1) RETURNING id) INSERT INTO invoice_items (invoice_id, position, description, quantity, unit_price, amount) SELECT id, 1, 'x', 1, 1, 1 FROM ins`, [number]);
        committed.set(number, Date.now());
        const due = start + n * 2; // 500 transactions/s = 1,000 rows/s
        if (due > Date.now()) await sleep(due - Date.now());
      }
    })();
    const poll = async (c: pg.Client, set: Set<string>, out: number[]) => {
      while (!stop || set.size < committed.size) {
        const { rows: r } = await c.query(`SELECT number FROM invoices WHERE customer_name = 'Lag'`);
        const now = Date.now();
        for (const { number } of r) {
          if (set.has(number) || !committed.has(number)) continue;
          set.add(number);
          out.push(now - committed.get(number)!);
        }
        if (stop && set.size >= committed.size) break;
        await sleep(20);
      }
    };
    const pollers = [poll(svc, seen, lags), poll(native, seenNative, nativeLags)];
    await sleep(LOAD_SECONDS * 1000);
    stop = true;
    await writer;
    await Promise.all(pollers);

    const fmt = (n: number) => n.toFixed(0).padStart(9);
    say(`\nsync bench: ${rows} rows backfilled (${INVOICES} invoices + ${INVOICES * 3} items), ${BURST * 2}-row bursts, ${LOAD_SECONDS} s at ~1,000 row changes/s; one private cluster, this machine\n`);
    say(`measure                      ours     native    ratio   target`);
    say(`backfill rows/s         ${fmt((rows / oursBackfillMs) * 1000)}  ${fmt((rows / nativeBackfillMs) * 1000)}   ${(nativeBackfillMs / oursBackfillMs).toFixed(2)}×    ≥ 1.0×`);
    say(`streaming apply rows/s  ${fmt(((BURST * 2) / applyOurs) * 1000)}  ${fmt(((BURST * 2) / Math.max(applyNative, 1)) * 1000)}   ${(Math.max(applyNative, 1) / applyOurs).toFixed(2)}×    ≥ 0.5×   (burst written in ${writtenMs} ms)`);
    say(`lag p50 ms              ${fmt(pct(lags, 0.5))}  ${fmt(pct(nativeLags, 0.5))}`);
    say(`lag p99 ms              ${fmt(pct(lags, 0.99))}  ${fmt(pct(nativeLags, 0.99))}            ≤ 1000 ms`);
    await worker.stop();
    await native.query(`ALTER SUBSCRIPTION bench_native DISABLE`);
    await native.query(`ALTER SUBSCRIPTION bench_native SET (slot_name = NONE)`);
    await native.query(`DROP SUBSCRIPTION bench_native`);
    for (const c of [legacy, native, svc]) await c.end();
  } finally {
    await cluster.destroy();
  }
}

if (process.env.BENCH_SYNC !== 'oltp') await main();
await oltp();
