import pg from 'pg';
import { compareLsn } from './lsn.ts';
import { quoteIdent as q, type SyncPlan, type TablePlan } from './plan.ts';
import { HEARTBEAT_PREFIX } from './worker.ts';

export interface ChunkResult {
  from: unknown[] | null;
  to: unknown[] | null;
  sourceRows: number;
  targetRows: number;
  match: boolean;
}

export interface TableVerification {
  table: string;
  target: string;
  sourceRows: number;
  targetRows: number;
  chunks: number;
  ok: boolean;
  /** Key ranges the monolith kept writing to during every read: neither equal nor proven different. */
  unsettled: Array<{ from: unknown[] | null; to: unknown[] | null }>;
  /** Keys above this were inserted during the verify and not compared. */
  highWater?: unknown[] | null;
  /** The first key range (from, exclusive; to, inclusive) whose rows differ. */
  firstMismatch: { from: unknown[] | null; to: unknown[] | null; sourceRows: number; targetRows: number } | null;
}

export interface Verification {
  pipeline: string;
  ok: boolean;
  tables: TableVerification[];
  ms: number;
}

function keyExpr(cols: string[]): string {
  return cols.length === 1 ? q(cols[0]) : `(${cols.map(q).join(', ')})`;
}

function params(values: unknown[], offset: number): string {
  return values.length === 1 ? `$${offset + 1}` : `(${values.map((_, i) => `$${offset + i + 1}`).join(', ')})`;
}

/** count and md5 of the mapped rows of one key range, on one side. */
async function checksum(client: pg.Client, table: string, cols: string[], key: string[], from: unknown[] | null, to: unknown[] | null): Promise<{ rows: number; sum: string | null }> {
  const k = keyExpr(key);
  const conditions = [from ? `${k} > ${params(from, 0)}` : null, to ? `${k} <= ${params(to, from ? from.length : 0)}` : null].filter(Boolean);
  const where = conditions.length ? `WHERE ${conditions.join(' AND ')}` : '';
  const row = `ROW(${cols.map(q).join(', ')})::text`;
  const { rows } = await client.query(
    `SELECT count(*)::int AS n, md5(string_agg(md5(${row}), '' ORDER BY ${key.map(q).join(', ')})) AS sum FROM ${q(table)} ${where}`,
    [...(from ?? []), ...(to ?? [])],
  );
  return { rows: rows[0].n, sum: rows[0].sum };
}

/**
 * Compares source and target table by table, in primary-key chunks (plain SELECTs: no lock
 * beyond ACCESS SHARE, no long transaction). Each chunk is read on the source with the source's
 * WAL position, then on the target once the sync has applied at least that position; a chunk
 * that differs is re-read a few times (rows may change between the two reads) before it counts.
 */
export async function verifyPipeline(options: { sourceUrl: string; targetUrl: string; plan: SyncPlan; chunkRows?: number; catchUpTimeoutMs?: number }): Promise<Verification> {
  const started = Date.now();
  const source = new pg.Client({ connectionString: options.sourceUrl });
  const target = new pg.Client({ connectionString: options.targetUrl });
  await source.connect();
  await target.connect();
  try {
    const tables: TableVerification[] = [];
    for (const table of options.plan.tables) tables.push(await verifyTable(source, target, options.plan, table, options.chunkRows ?? 5_000, options.catchUpTimeoutMs ?? 10_000));
    return { pipeline: options.plan.pipeline, ok: tables.every((t) => t.ok), tables, ms: Date.now() - started };
  } finally {
    await source.end().catch(() => undefined);
    await target.end().catch(() => undefined);
  }
}

async function waitApplied(source: pg.Client, target: pg.Client, pipeline: string, timeoutMs: number): Promise<void> {
  // A heartbeat makes the sync's applied position move past the source position just read.
  const { rows } = await source.query(`SELECT pg_logical_emit_message(true, $1, clock_timestamp()::text)::text AS lsn`, [HEARTBEAT_PREFIX]);
  const wanted = rows[0].lsn as string;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const r = await target.query(`SELECT applied_lsn::text AS lsn FROM strangler_sync.pipelines WHERE pipeline = $1`, [pipeline]);
    if (r.rows[0]?.lsn && compareLsn(r.rows[0].lsn, wanted) >= 0) return;
    await new Promise((ok) => setTimeout(ok, 20));
  }
}

async function verifyTable(source: pg.Client, target: pg.Client, plan: SyncPlan, table: TablePlan, chunkRows: number, timeoutMs: number): Promise<TableVerification> {
  const srcCols = table.columns.map((c) => c.source);
  const dstCols = table.columns.map((c) => c.target);
  const srcKey = table.key;
  const dstKey = table.key.map((k) => table.columns.find((c) => c.source === k)!.target);
  const result: TableVerification = { table: table.source, target: table.target, sourceRows: 0, targetRows: 0, chunks: 0, ok: true, firstMismatch: null, unsettled: [] };
  let from: unknown[] | null = null;
  let last = false;
  // The key high-water mark at the start: rows the monolith inserts above it while the verify
  // runs are still moving and are not compared (each pass would chase them).
  const k = keyExpr(srcKey);
  // Aliased, so that ORDER BY sorts by the key columns themselves, not by their text.
  const keyText = srcKey.map((c, i) => `${q(c)}::text AS __k${i}`).join(', ');
  const keyOf = (row: Record<string, string>) => srcKey.map((_, i) => row[`__k${i}`]);
  const top = await source.query(`SELECT ${keyText} FROM ${q(table.source)} ORDER BY ${srcKey.map((c) => `${q(c)} DESC`).join(', ')} LIMIT 1`);
  const highWater: unknown[] | null = top.rows[0] ? keyOf(top.rows[0]) : null;
  result.highWater = highWater;
  while (!last) {
    const { rows }: { rows: Array<Record<string, string>> } = await source.query(
      `SELECT ${keyText} FROM ${q(table.source)} ${from ? `WHERE ${k} > ${params(from, 0)}` : ''} ORDER BY ${srcKey.map(q).join(', ')} OFFSET ${chunkRows - 1} LIMIT 1`,
      from ?? [],
    );
    // The last chunk ends at the high-water mark (or is open-ended on an empty source, so rows only the target has are counted).
    let to: unknown[] | null = rows[0] ? keyOf(rows[0]) : highWater;
    if (!rows[0]) last = true;
    if (rows[0] && highWater) {
      // Typed by the key columns: is anything left between this chunk's end and the high-water mark?
      const left = await source.query(`SELECT EXISTS (SELECT 1 FROM ${q(table.source)} WHERE ${k} > ${params(to!, 0)} AND ${k} <= ${params(highWater, to!.length)}) AS more`, [...to!, ...highWater]);
      if (!left.rows[0].more) {
        to = highWater;
        last = true;
      }
    }
    // A difference counts only when the source range held still across two reads and the
    // target, caught up past it, still differs twice in a row; a range the monolith keeps
    // writing to is reported as unsettled (re-run later), not as a difference.
    let chunk: ChunkResult | null = null;
    let previousSource: string | null = null;
    let stableMisses = 0;
    let definite = false;
    for (let attempt = 0; attempt < 8; attempt++) {
      const s = await checksum(source, table.source, srcCols, srcKey, from, to);
      await waitApplied(source, target, plan.pipeline, timeoutMs);
      const t = await checksum(target, table.target, dstCols, dstKey, from, to);
      chunk = { from, to, sourceRows: s.rows, targetRows: t.rows, match: s.rows === t.rows && s.sum === t.sum };
      if (chunk.match) break;
      const sourceKey = `${s.rows}:${s.sum}`;
      stableMisses = sourceKey === previousSource ? stableMisses + 1 : 0;
      previousSource = sourceKey;
      if (stableMisses >= 2) {
        definite = true;
        break;
      }
      await new Promise((ok) => setTimeout(ok, 30 * (attempt + 1)));
    }
    result.chunks++;
    result.sourceRows += chunk!.sourceRows;
    result.targetRows += chunk!.targetRows;
    if (!chunk!.match && !definite) result.unsettled.push({ from, to });
    if (!chunk!.match && definite && result.ok) {
      result.ok = false;
      result.firstMismatch = { from, to, sourceRows: chunk!.sourceRows, targetRows: chunk!.targetRows };
    }
    if (to) from = to;
  }
  return result;
}

/** Records a verification in the target (strangler status and the cutover checks read the last one). */
export async function recordVerification(targetUrl: string, v: Verification): Promise<void> {
  const client = new pg.Client({ connectionString: targetUrl });
  await client.connect();
  try {
    await client.query(`INSERT INTO strangler_sync.verifications (pipeline, ok, summary) VALUES ($1, $2, $3)`, [v.pipeline, v.ok, JSON.stringify(v)]);
  } finally {
    await client.end();
  }
}
