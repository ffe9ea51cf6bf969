/**
 * The sync under an OLTP workload (issue 18): 8 pgbench clients committing one-row
 * transactions (updates, inserts, deletes) on legacy, applied by our worker and by a native
 * subscription side by side, from the same source, in the same run.
 *
 * 1. Capacity: the load runs unthrottled for OLTP_SECONDS; each applier's sustained apply rate
 *    is the source transactions over the time from the load's start until it has applied
 *    everything the load committed (an applier that keeps up scores the load's own rate).
 * 2. Lag: the load runs at 80 % of the slower applier's capacity; the lag of each, sampled
 *    every 50 ms, is the age of the source WAL position it has applied up to.
 * 3. Catch-up: both appliers stopped, the load runs unthrottled for OLTP_SECONDS, then both
 *    start at once on that backlog (a worker back after downtime). Each one's rate is the
 *    backlog's transactions over its time to apply them all; pgbench no longer shares the
 *    cores, so this is the applier's own capacity, and its CPU per transaction with nothing
 *    else in the Node process.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { join } from 'node:path';
import pg from 'pg';
import type { ResolvedConfig, ResolvedService } from '../core/config/load.ts';
import { silentLogger } from '../core/logger.ts';
import { compareLsn } from '../migrations/sync/lsn.ts';
import { SyncWorker } from '../migrations/sync/worker.ts';
import type { PostgresCluster } from '../stack/postgres-cluster.ts';
import { BANK_TABLES, bankTables, initBank, runBankLoad } from '../test/oltp.ts';

const SECONDS = Number(process.env.BENCH_OLTP_SECONDS ?? 20);
const SCALE = Number(process.env.BENCH_OLTP_SCALE ?? 1);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface OltpResult {
  transactions: number;
  loadTps: number;
  ours: { tps: number; lagP50: number; lagP99: number };
  native: { tps: number; lagP50: number; lagP99: number };
  lagRate: number;
  /** Phase 3: the backlog's size, each applier's rate through it, and CPU ms per 1,000 of its transactions. */
  catchUp: { transactions: number; ours: number; native: number; cpuPerKtx: { oursWalsender: number; oursBackend: number; oursNode: number; nativeWalsender: number; nativeApply: number } };
  /** CPU seconds per 1,000 source transactions during the capacity phase: our Postgres processes (walsender, target backend), our Node process, native's (walsender, apply worker). */
  cpuPerKtx: { ours: number; oursNode: number; native: number };
}

async function client(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  return c;
}

function pct(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))] ?? 0;
}

export async function oltpBench(cluster: PostgresCluster, base: ResolvedConfig, say: (line: string) => void): Promise<OltpResult> {
  for (const db of ['oltp_legacy', 'oltp_svc', 'oltp_native']) await cluster.createDatabase(db);
  const legacyUrl = cluster.url('oltp_legacy');
  say(`oltp: pgbench -i -s ${SCALE} and a key-value table…`);
  await initBank(legacyUrl, SCALE);
  const service: ResolvedService = { ...base.services[0], name: 'bank', prefix: '/api/bank', database: 'oltp_svc', databaseUrl: cluster.url('oltp_svc'), tables: bankTables(), readOnly: false, dependsOn: [] };
  const config: ResolvedConfig = { ...base, legacy: { ...base.legacy, databaseUrl: legacyUrl }, services: [service] };
  const legacy = await client(legacyUrl);
  const native = await client(cluster.url('oltp_native'));
  const svc = await client(service.databaseUrl);

  // Native: the same tables (created by pg_dump's DDL equivalent: copy the definitions), a publication, a subscription.
  for (const t of BANK_TABLES) {
    const cols = await legacy.query(`SELECT string_agg(quote_ident(attname) || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) AS cols FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`, [t.table]);
    await native.query(`CREATE TABLE ${t.table} (${cols.rows[0].cols}, PRIMARY KEY (${t.key}))`);
  }
  await legacy.query(`CREATE PUBLICATION oltp_native FOR TABLE ${BANK_TABLES.map((t) => t.table).join(', ')}`);
  await legacy.query(`SELECT pg_create_logical_replication_slot('oltp_native', 'pgoutput')`);
  await native.query(`CREATE SUBSCRIPTION oltp_native CONNECTION '${legacyUrl}' PUBLICATION oltp_native WITH (create_slot = false, slot_name = 'oltp_native', copy_data = true)`);
  for (;;) {
    const { rows } = await native.query(`SELECT count(*) FILTER (WHERE srsubstate <> 'r') AS pending, count(*) AS n FROM pg_subscription_rel`);
    if (Number(rows[0].n) === BANK_TABLES.length && Number(rows[0].pending) === 0) break;
    await sleep(50);
  }
  let worker = new SyncWorker({ config, service, logger: silentLogger });
  await worker.start();

  const nativeOrigin = `pg_${(await native.query(`SELECT oid FROM pg_subscription WHERE subname = 'oltp_native'`)).rows[0].oid}`;
  const appliedOurs = async () => (await svc.query(`SELECT applied_lsn::text AS lsn FROM strangler_sync.pipelines WHERE pipeline = 'bank:forward'`)).rows[0]?.lsn as string;
  const appliedNative = async () => ((await native.query(`SELECT remote_lsn::text AS lsn FROM pg_replication_origin_status WHERE external_id = $1`, [nativeOrigin])).rows[0]?.lsn as string | undefined) ?? '0/0';
  const head = async () => (await legacy.query(`SELECT pg_current_wal_lsn()::text AS lsn`)).rows[0].lsn as string;

  // CPU of each applier's processes (walsender, applying backend or apply worker, and our Node
  // process), from /proc, over the capacity phase: where each one's time goes.
  const processes = async () => {
    const slots = await legacy.query(`SELECT slot_name, active_pid FROM pg_replication_slots WHERE active_pid IS NOT NULL`);
    const walsender = (name: string) => slots.rows.filter((r) => (name === 'native' ? r.slot_name === 'oltp_native' : r.slot_name !== 'oltp_native' && !String(r.slot_name).startsWith('strangler_verify'))).map((r) => Number(r.active_pid));
    const backends = async (c: pg.Client) => (await c.query(`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`)).rows.map((r) => Number(r.pid));
    return { oursWalsender: walsender('ours'), oursBackends: await backends(svc), nativeWalsender: walsender('native'), nativeApply: await backends(native) };
  };
  const pids = async (): Promise<{ ours: number[]; native: number[] }> => {
    const p = await processes();
    return { ours: [...p.oursWalsender, ...p.oursBackends], native: [...p.nativeWalsender, ...p.nativeApply] };
  };
  const ticks = (pid: number): number => {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
      return Number(f[11]) + Number(f[12]); // utime + stime, clock ticks (100 a second)
    } catch {
      return 0;
    }
  };
  const cpuOf = (list: number[]) => list.reduce((sum, pid) => sum + ticks(pid), 0) / 100;
  const before = await pids();
  const cpu0 = { ours: cpuOf(before.ours), native: cpuOf(before.native), node: process.cpuUsage() };

  // A marker after a load: the time at which each applier shows it has applied everything before it.
  const whenApplied = async (started: number): Promise<Record<'ours' | 'native', number>> => {
    const marker = `done-${Date.now()}`;
    await legacy.query(`UPDATE bank_kv SET note = $1 WHERE id = (SELECT min(id) FROM bank_kv)`, [marker]);
    const caughtUp = { ours: 0, native: 0 };
    await Promise.all(
      (
        [
          ['ours', svc],
          ['native', native],
        ] as const
      ).map(async ([name, c]) => {
        while ((await c.query(`SELECT 1 FROM bank_kv WHERE note = $1`, [marker])).rowCount === 0) await sleep(20);
        caughtUp[name] = Date.now() - started;
      }),
    );
    return caughtUp;
  };

  // 1. Capacity.
  say(`oltp: ${SECONDS} s of unthrottled load (8 clients, one-row transactions)…`);
  const started = Date.now();
  const load = runBankLoad(legacyUrl, { clients: 8, seconds: SECONDS, scripts: ['update', 'insert', 'delete'] });
  const { transactions, tps: loadTps } = await load.done;
  say(`oltp: load done: ${transactions} transactions, ${loadTps} tps`);
  const caughtUp = await whenApplied(started);
  const node = process.cpuUsage(cpu0.node);
  const cpu = {
    ours: cpuOf(before.ours) - cpu0.ours,
    oursNode: (node.user + node.system) / 1e6,
    native: cpuOf(before.native) - cpu0.native,
  };
  const oursTps = (transactions / caughtUp.ours) * 1000;
  const nativeTps = (transactions / caughtUp.native) * 1000;

  // 2. Lag at 80 % of the slower one's capacity.
  const rate = Math.floor(Math.min(oursTps, nativeTps) * 0.8);
  say(`oltp: ${SECONDS} s at ${rate} transactions/s, sampling the lag…`);
  const wal: Array<{ at: number; lsn: string }> = [];
  const lags = { ours: [] as number[], native: [] as number[] };
  let sampling = true;
  const ageOf = (lsn: string, now: number) => {
    // The first sample whose WAL head is at or past the applied position: the applier is that old.
    for (const w of wal) if (compareLsn(w.lsn, lsn) >= 0) return now - w.at;
    return 0;
  };
  const sampler = (async () => {
    while (sampling) {
      const now = Date.now();
      wal.push({ at: now, lsn: await head() });
      const [o, n] = await Promise.all([appliedOurs(), appliedNative()]);
      lags.ours.push(ageOf(o, now));
      lags.native.push(ageOf(n, now));
      await sleep(50);
    }
  })();
  await runBankLoad(legacyUrl, { clients: 8, seconds: SECONDS, rate, scripts: ['update', 'insert', 'delete'] }).done;
  sampling = false;
  await sampler;

  // 3. Catch-up from a backlog both appliers start on at once.
  await worker.stop();
  await native.query(`ALTER SUBSCRIPTION oltp_native DISABLE`);
  while ((await legacy.query(`SELECT 1 FROM pg_replication_slots WHERE active_pid IS NOT NULL AND slot_name = 'oltp_native'`)).rowCount) await sleep(20);
  say(`oltp: both appliers stopped, ${SECONDS} s of unthrottled load…`);
  const backlog = await runBankLoad(legacyUrl, { clients: 8, seconds: SECONDS, scripts: ['update', 'insert', 'delete'] }).done;
  say(`oltp: backlog of ${backlog.transactions} transactions; both appliers start…`);
  const drainStarted = Date.now();
  worker = new SyncWorker({ config, service, logger: silentLogger });
  await Promise.all([worker.start(), native.query(`ALTER SUBSCRIPTION oltp_native ENABLE`)]);
  // Native's apply worker starts a moment later: its processes are counted once its slot is in use.
  while ((await legacy.query(`SELECT 1 FROM pg_replication_slots WHERE active_pid IS NOT NULL AND slot_name = 'oltp_native'`)).rowCount === 0) await sleep(5);
  const drainProcs = await processes();
  const drain0 = { node: process.cpuUsage(), cpu: Object.fromEntries(Object.entries(drainProcs).map(([k, list]) => [k, cpuOf(list)])) as Record<keyof typeof drainProcs, number> };
  // BENCH_PROFILE=<dir>: a V8 CPU profile of this process (the worker) over the catch-up only.
  const profiler = process.env.BENCH_PROFILE ? new Session() : null;
  if (profiler) {
    profiler.connect();
    await profiler.post('Profiler.enable');
    await profiler.post('Profiler.start');
  }
  const drained = await whenApplied(drainStarted);
  if (profiler) {
    const { profile } = await profiler.post('Profiler.stop');
    writeFileSync(join(process.env.BENCH_PROFILE!, `catch-up-${Date.now()}.cpuprofile`), JSON.stringify(profile));
    profiler.disconnect();
  }
  const drainNode = process.cpuUsage(drain0.node);
  const perKtx = (seconds: number) => (seconds / backlog.transactions) * 1000;
  const used = (k: keyof typeof drainProcs) => perKtx(cpuOf(drainProcs[k]) - drain0.cpu[k]);
  const catchUp = {
    transactions: backlog.transactions,
    ours: (backlog.transactions / drained.ours) * 1000,
    native: (backlog.transactions / drained.native) * 1000,
    cpuPerKtx: { oursWalsender: used('oursWalsender'), oursBackend: used('oursBackends'), oursNode: perKtx((drainNode.user + drainNode.system) / 1e6), nativeWalsender: used('nativeWalsender'), nativeApply: used('nativeApply') },
  };

  await worker.stop();
  await native.query(`ALTER SUBSCRIPTION oltp_native DISABLE`);
  await native.query(`ALTER SUBSCRIPTION oltp_native SET (slot_name = NONE)`);
  await native.query(`DROP SUBSCRIPTION oltp_native`);
  await legacy.query(`SELECT pg_drop_replication_slot('oltp_native')`);
  for (const c of [legacy, native, svc]) await c.end();
  return {
    transactions,
    loadTps,
    lagRate: rate,
    catchUp,
    cpuPerKtx: { ours: (cpu.ours / transactions) * 1000, oursNode: (cpu.oursNode / transactions) * 1000, native: (cpu.native / transactions) * 1000 },
    ours: { tps: oursTps, lagP50: pct(lags.ours, 0.5), lagP99: pct(lags.ours, 0.99) },
    native: { tps: nativeTps, lagP50: pct(lags.native, 0.5), lagP99: pct(lags.native, 0.99) },
  };
}
