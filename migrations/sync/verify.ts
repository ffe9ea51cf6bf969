import pg from 'pg';
import type { ResolvedConfig, ResolvedService } from '../../core/config/load.ts';
import { lsnDistance } from './lsn.ts';
import { pipelineStore, readPipelineState } from './pipeline-store.ts';
import { quoteIdent as q, type Direction, type SyncPlan, type TablePlan } from './plan.ts';
import { pipelineEnds, planPipeline } from './setup.ts';

/** A key range: from (exclusive) to (inclusive); null is open-ended. */
export interface KeyRange {
  from: unknown[] | null;
  to: unknown[] | null;
  sourceRows: number;
  targetRows: number;
}

export interface TableVerification {
  table: string;
  target: string;
  sourceRows: number;
  targetRows: number;
  chunks: number;
  ok: boolean;
  /** Differing key ranges, narrowed down and at most MAX_RANGES of them. */
  mismatches: KeyRange[];
  /** How many differing ranges there are in all. */
  mismatchCount: number;
  /** Ranges that could not be compared at one point of the source's history (a stopped pipeline behind its source, a source still writing). */
  unsettled: KeyRange[];
  /** The first entry of `mismatches` (what older readers of a recorded verification look at). */
  firstMismatch: KeyRange | null;
  /** Source columns the target does not have (new on the source and not carried, or mapped to a column the target lacks): not compared. */
  columnsOnlyOnSource: string[];
  /** Target columns the pipeline used to fill whose source column is gone (dropped or renamed on the source): the table is not verified. */
  columnsOnlyOnTarget: string[];
}

export interface Verification {
  pipeline: string;
  ok: boolean;
  /** verified: equal; mismatch: rows differ; lagging: the target could not be brought to the source's point in time, nothing is proven different. */
  verdict: 'verified' | 'mismatch' | 'lagging';
  /**
   * Compared at one point of the source's history: the source read in the snapshot of that
   * point, the target held by its worker exactly there. False when no worker runs.
   */
  consistent: boolean;
  /** The source position compared at. */
  point: string | null;
  /** How far the target was behind the source when the verify started. */
  lag: { bytes: number | null; seconds: number | null };
  tables: TableVerification[];
  /** Why the verdict is what it is, in a sentence, when it is not plain. */
  note: string | null;
  ms: number;
}

export interface VerifyOptions {
  sourceUrl: string;
  targetUrl: string;
  plan: SyncPlan;
  /** Rows per checksum chunk. */
  chunkRows?: number;
  /** How long the worker may take to pause, and then to reach the verify's point, before the verdict is "lagging". */
  catchUpTimeoutMs?: number;
  /** Progress while waiting for the worker, for the CLI. */
  onWait?: (w: { behindBytes: number; waitedMs: number }) => void;
  /** Another verify of the pipeline runs: this one waits for it to end. */
  onQueued?: () => void;
  /** Progress of the comparison, after each chunk of each table, for the CLI. */
  onProgress?: (p: VerifyProgress) => void;
}

export interface VerifyProgress {
  table: string;
  /** Tables finished before this one. */
  tablesDone: number;
  tablesTotal: number;
  chunksDone: number;
  chunksTotal: number;
}

const MAX_RANGES = 20;
/** A differing chunk is split until its ranges hold at most this many rows. */
const NARROW_TO = 10;
const HOLD_LEASE_MS = 60_000;

function keyExpr(cols: string[]): string {
  return cols.length === 1 ? q(cols[0]) : `(${cols.map(q).join(', ')})`;
}

function params(values: unknown[], offset: number): string {
  return values.length === 1 ? `$${offset + 1}` : `(${values.map((_, i) => `$${offset + i + 1}`).join(', ')})`;
}

function rangeWhere(key: string[], from: unknown[] | null, to: unknown[] | null): { where: string; values: unknown[] } {
  const k = keyExpr(key);
  const conditions = [from ? `${k} > ${params(from, 0)}` : null, to ? `${k} <= ${params(to, from ? from.length : 0)}` : null].filter(Boolean);
  return { where: conditions.length ? `WHERE ${conditions.join(' AND ')}` : '', values: [...(from ?? []), ...(to ?? [])] };
}

/** count and md5 of the mapped rows of one key range, on one side. */
async function checksum(client: pg.Client, table: string, cols: string[], key: string[], from: unknown[] | null, to: unknown[] | null): Promise<{ rows: number; sum: string | null }> {
  const { where, values } = rangeWhere(key, from, to);
  const row = `ROW(${cols.map(q).join(', ')})::text`;
  const { rows } = await client.query(`SELECT count(*)::int AS n, md5(string_agg(md5(${row}), '' ORDER BY ${key.map(q).join(', ')})) AS sum FROM ${q(table)} ${where}`, values);
  return { rows: rows[0].n, sum: rows[0].sum };
}

/** Keys (as text) splitting the source's rows of a range into chunks of `size`: the upper bound of each chunk. */
async function boundaries(client: pg.Client, table: TablePlan, from: unknown[] | null, to: unknown[] | null, size: number): Promise<unknown[][]> {
  const { where, values } = rangeWhere(table.key, from, to);
  const keyText = table.key.map((c, i) => `${q(c)}::text AS __k${i}`).join(', ');
  const { rows } = await client.query(
    `SELECT ${keyText} FROM (SELECT ${table.key.map(q).join(', ')}, row_number() OVER (ORDER BY ${table.key.map(q).join(', ')}) AS __n FROM ${q(table.source)} ${where}) s WHERE __n % ${size} = 0 ORDER BY __n`,
    values,
  );
  return rows.map((r) => table.key.map((_, i) => r[`__k${i}`]));
}

async function client(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

/**
 * Compares source and target table by table, in key-range chunks (count + md5 of the mapped
 * rows), narrowing every differing chunk down to small ranges.
 *
 * With a worker running, at one point of the source's history: a temporary slot's exported
 * snapshot gives the source as of its consistent point L, and the worker is asked to hold
 * exactly there (it pauses, runs up to the first commit at or past L, and waits: a hold with
 * a lease, so a verify that dies does not stop the sync for long). Both sides then stand still
 * for the read: every difference is a real one, and a pipeline far behind is waited for up to
 * catchUpTimeoutMs, then reported as lagging, by how much, with nothing called a mismatch.
 * With no worker running, the target stands still anyway: the source is read as it is, and
 * differences are real only if the slot holds nothing not applied yet (else: lagging).
 */
export async function verifyPipeline(options: VerifyOptions): Promise<Verification> {
  const started = Date.now();
  const { plan } = options;
  const store = pipelineStore(plan.pipeline);
  const chunkRows = options.chunkRows ?? 5_000;
  const source = await client(options.sourceUrl);
  const target = await client(options.targetUrl);
  let exporter: pg.Client | null = null;
  let held = false;
  const result = (verdict: Verification['verdict'], tables: TableVerification[], extra: Partial<Verification>): Verification => ({
    pipeline: plan.pipeline,
    ok: verdict === 'verified',
    verdict,
    consistent: false,
    point: null,
    lag: { bytes: null, seconds: null },
    tables,
    note: null,
    ms: Date.now() - started,
    ...extra,
  });
  try {
    const state = await readPipelineState(target, plan.pipeline);
    const head = (await source.query(`SELECT pg_current_wal_lsn()::text AS lsn, now() AS now`)).rows[0];
    const lag = {
      bytes: state?.appliedLsn ? lsnDistance(state.appliedLsn, head.lsn) : null,
      seconds: state?.heartbeatSourceAt ? Math.max(0, (head.now.getTime() - state.heartbeatSourceAt.getTime()) / 1000) : null,
    };
    if (state?.status === 'schema-stopped') {
      return result('lagging', [], { lag, note: `the pipeline is stopped at a schema change (since ${state.stoppedLsn}): ${state.stoppedReason}` });
    }
    const slot = (await source.query(`SELECT active FROM pg_replication_slots WHERE slot_name = $1`, [plan.slot])).rows[0];
    const running = Boolean(slot?.active && state?.status === 'streaming');
    let point: string;
    if (running) {
      // 1. Pause the worker where it is; 2. fix the point (after the pause: the worker is
      // before it); 3. let it run exactly up to there. Another verify of the pipeline goes first.
      await store.verifyTurn(target, options.onQueued);
      await store.requestHold(target, HOLD_LEASE_MS);
      held = true;
      const pauseMs = options.catchUpTimeoutMs ?? 60_000;
      const paused = await waitForHold(target, store, null, pauseMs, options);
      if (!paused) {
        const now = await readPipelineState(target, plan.pipeline);
        const behind = now?.appliedLsn ? lsnDistance(now.appliedLsn, (await source.query(`SELECT pg_current_wal_lsn()::text AS lsn`)).rows[0].lsn) : null;
        return result('lagging', [], {
          lag,
          note: `the ${plan.pipeline} worker is busy applying and did not pause for the verify within ${(pauseMs / 1000).toFixed(0)} s; it is ${behind === null ? 'an unknown amount' : `${(behind / 1024 / 1024).toFixed(1)} MB of WAL`} behind its source; nothing was compared (strangler sync status shows its lag and last error)`,
        });
      }
      exporter = new pg.Client({ connectionString: options.sourceUrl, replication: 'database' } as pg.ClientConfig);
      await exporter.connect();
      const { rows } = await exporter.query(`CREATE_REPLICATION_SLOT ${q(`strangler_verify_${process.pid}_${Date.now()}`.slice(0, 63))} TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')`);
      point = rows[0].consistent_point;
      await store.holdAt(target, point);
      await source.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      await source.query(`SET TRANSACTION SNAPSHOT '${String(rows[0].snapshot_name).replace(/'/g, "''")}'`);
      const reached = await waitForHold(target, store, point, options.catchUpTimeoutMs ?? 60_000, options);
      if (!reached) {
        const now = await readPipelineState(target, plan.pipeline);
        const behind = now?.appliedLsn ? lsnDistance(now.appliedLsn, point) : null;
        return result('lagging', [], {
          lag,
          point,
          note: `the pipeline is behind its source (${behind === null ? 'unknown' : `${(behind / 1024 / 1024).toFixed(1)} MB`} from the verify's point after ${((options.catchUpTimeoutMs ?? 60_000) / 1000).toFixed(0)} s${lag.seconds !== null ? `; ${lag.seconds.toFixed(1)} s behind when it started` : ''}); nothing was compared. Run verify again once it has caught up (strangler sync status)`,
        });
      }
    } else {
      point = head.lsn;
      const pending = await slotHasPending(source, plan);
      if (pending) {
        return result('lagging', [], {
          lag,
          point,
          note: `no worker runs the pipeline and its slot holds changes not applied yet (${lag.bytes === null ? '?' : `${(lag.bytes / 1024 / 1024).toFixed(1)} MB of WAL`} behind); start it (strangler sync start) and verify again`,
        });
      }
    }
    const renew = running ? setInterval(() => void store.renewHold(target, HOLD_LEASE_MS).catch(() => undefined), HOLD_LEASE_MS / 3) : null;
    try {
      const tables: TableVerification[] = [];
      for (const table of plan.tables) {
        const onChunk = options.onProgress && ((chunksDone: number, chunksTotal: number) => options.onProgress!({ table: table.source, tablesDone: tables.length, tablesTotal: plan.tables.length, chunksDone, chunksTotal }));
        tables.push(await verifyTable(source, target, plan.pipeline, table, chunkRows, !running, onChunk));
      }
      const bad = tables.some((t) => !t.ok);
      const unsettled = tables.some((t) => t.unsettled.length > 0);
      const gone = tables.filter((t) => t.columnsOnlyOnTarget.length).map((t) => `${t.target}.${t.columnsOnlyOnTarget.join(', ')}`);
      return result(bad ? 'mismatch' : unsettled ? 'lagging' : 'verified', tables, {
        consistent: running,
        point,
        lag,
        note: gone.length
          ? `columns the sync filled have no source column any more (dropped or renamed on the source): ${gone.join('; ')}; map the new names in strangler.yaml or exclude them`
          : unsettled
            ? 'the source kept changing key ranges while no worker ran; those ranges are unsettled, not different'
            : null,
      });
    } finally {
      if (renew) clearInterval(renew);
    }
  } finally {
    if (held) await store.releaseHold(target).catch(() => undefined);
    await source.query('ROLLBACK').catch(() => undefined);
    await exporter?.end().catch(() => undefined);
    await source.end().catch(() => undefined);
    await target.end().catch(() => undefined);
  }
}

/** Waits for the worker to pause (point null) or to stand at `point`. */
async function waitForHold(target: pg.Client, store: ReturnType<typeof pipelineStore>, point: string | null, timeoutMs: number, options: VerifyOptions): Promise<boolean> {
  const started = Date.now();
  let reported = 0;
  for (;;) {
    const h = await store.hold(target);
    if (h.held && (point === null || h.held === point)) return true;
    if (Date.now() - started > timeoutMs) return false;
    if (point && options.onWait && Date.now() - reported > 1_000) {
      reported = Date.now();
      const applied = (await readPipelineState(target, options.plan.pipeline))?.appliedLsn;
      options.onWait({ behindBytes: applied ? lsnDistance(applied, point) : 0, waitedMs: Date.now() - started });
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Whether the (inactive) slot holds a change of the pipeline's tables not applied yet: read without consuming. */
async function slotHasPending(source: pg.Client, plan: SyncPlan): Promise<boolean> {
  try {
    const { rows } = await source.query(`SELECT count(*)::int AS n FROM pg_logical_slot_peek_binary_changes($1, NULL, 1, 'proto_version', '1', 'publication_names', $2)`, [plan.slot, plan.publication]);
    return rows[0].n > 0;
  } catch {
    return false; // no slot (never started, or dropped): nothing pending in it
  }
}

/**
 * The columns both sides have, as the mapping pairs them, and those one side has alone: the
 * source's catalog against the target's, and the shape the pipeline applied (its fed columns).
 */
async function comparableColumns(target: pg.Client, pipeline: string, table: TablePlan): Promise<{ columns: TablePlan['columns']; onlySource: string[]; onlyTarget: string[] }> {
  const { rows } = await target.query(`SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`, [`public.${q(table.target)}`]);
  const present = new Set(rows.map((r) => r.attname as string));
  const shape = await target.query(`SELECT columns FROM strangler_sync.tables WHERE pipeline = $1 AND source = $2`, [pipeline, table.source]).catch(() => ({ rows: [] as Array<{ columns: unknown }> }));
  const fed = ((shape.rows[0]?.columns ?? []) as Array<{ target: string; status: string }>).filter((c) => c.status === 'mapped').map((c) => c.target);
  const mappedTargets = new Set(table.columns.map((c) => c.target));
  return {
    columns: table.columns.filter((c) => present.has(c.target)),
    onlySource: table.columns.filter((c) => !present.has(c.target)).map((c) => c.source),
    onlyTarget: fed.filter((t) => present.has(t) && !mappedTargets.has(t)),
  };
}

async function verifyTable(source: pg.Client, target: pg.Client, pipeline: string, table: TablePlan, chunkRows: number, moving: boolean, onChunk?: (done: number, total: number) => void): Promise<TableVerification> {
  const shape = await comparableColumns(target, pipeline, table);
  const srcCols = shape.columns.map((c) => c.source);
  const dstCols = shape.columns.map((c) => c.target);
  const dstKey = table.key.map((k) => table.columns.find((c) => c.source === k)!.target);
  const result: TableVerification = {
    table: table.source,
    target: table.target,
    sourceRows: 0,
    targetRows: 0,
    chunks: 0,
    ok: shape.onlyTarget.length === 0 && table.key.every((k) => srcCols.includes(k)),
    mismatches: [],
    mismatchCount: 0,
    unsettled: [],
    firstMismatch: null,
    columnsOnlyOnSource: shape.onlySource,
    columnsOnlyOnTarget: shape.onlyTarget,
  };
  if (!table.key.every((k) => srcCols.includes(k))) return result; // a key column the target lacks: nothing can be compared
  const compare = async (from: unknown[] | null, to: unknown[] | null) => {
    const s = await checksum(source, table.source, srcCols, table.key, from, to);
    const t = await checksum(target, table.target, dstCols, dstKey, from, to);
    return { from, to, sourceRows: s.rows, targetRows: t.rows, match: s.rows === t.rows && s.sum === t.sum, sum: s.sum };
  };
  /** A differing range, split until its parts are small; the differing parts are recorded. */
  const narrow = async (from: unknown[] | null, to: unknown[] | null, rows: number): Promise<void> => {
    const size = Math.max(NARROW_TO, Math.ceil(rows / 10));
    const cuts = rows > NARROW_TO ? await boundaries(source, table, from, to, size) : [];
    if (cuts.length === 0 || (to && cuts.length === 1 && JSON.stringify(cuts[0]) === JSON.stringify(to))) {
      const c = await compare(from, to);
      if (c.match) return;
      if (moving) {
        // No worker holds the target still and the source may move: read the source again.
        const again = await compare(from, to);
        if (again.match) return;
        if (again.sum !== c.sum) {
          result.unsettled.push({ from, to, sourceRows: again.sourceRows, targetRows: again.targetRows });
          return;
        }
      }
      result.ok = false;
      result.mismatchCount++;
      if (result.mismatches.length < MAX_RANGES) result.mismatches.push({ from, to, sourceRows: c.sourceRows, targetRows: c.targetRows });
      return;
    }
    let lower = from;
    for (const cut of [...cuts, to]) {
      if (cut && lower && JSON.stringify(cut) === JSON.stringify(lower)) continue;
      const c = await compare(lower, cut);
      if (!c.match) await narrow(lower, cut, Math.max(c.sourceRows, c.targetRows));
      lower = cut;
      if (!cut) break;
    }
  };
  // Chunks from the source's keys; the last one is open-ended, so rows only the target has
  // above the source's last key are counted too.
  const cuts = await boundaries(source, table, null, null, chunkRows);
  let from: unknown[] | null = null;
  onChunk?.(0, cuts.length + 1);
  for (const to of [...cuts, null]) {
    const c = await compare(from, to);
    result.chunks++;
    onChunk?.(result.chunks, cuts.length + 1);
    result.sourceRows += c.sourceRows;
    result.targetRows += c.targetRows;
    if (!c.match) await narrow(from, to, Math.max(c.sourceRows, c.targetRows));
    from = to;
  }
  result.firstMismatch = result.mismatches[0] ?? null;
  return result;
}

/** Records a verification in the target (strangler status and the cutover checks read the last one). */
export async function recordVerification(targetUrl: string, v: Verification): Promise<void> {
  const c = await client(targetUrl);
  try {
    await c.query(`INSERT INTO strangler_sync.verifications (pipeline, ok, summary) VALUES ($1, $2, $3)`, [v.pipeline, v.ok, JSON.stringify(v)]);
  } finally {
    await c.end();
  }
}

/** Verifies a service's pipeline in one direction (its plan read from the source's catalog). */
export async function verifyService(config: ResolvedConfig, service: ResolvedService, direction: Exclude<Direction, 'feed'>, options: Omit<VerifyOptions, 'sourceUrl' | 'targetUrl' | 'plan'> = {}): Promise<Verification> {
  const { sourceUrl, targetUrl } = pipelineEnds(config, service, direction);
  const c = await client(sourceUrl);
  let plan: SyncPlan;
  try {
    plan = await planPipeline(c, { config, service, direction });
  } finally {
    await c.end().catch(() => undefined);
  }
  return verifyPipeline({ sourceUrl, targetUrl, plan, ...options });
}
