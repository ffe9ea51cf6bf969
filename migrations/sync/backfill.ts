import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { PipelineStore } from './pipeline-store.ts';
import { quoteIdent as q, type TablePlan } from './plan.ts';

/** A week: long enough for any table's copy, finite so a hung target is still let go of. */
const COPY_DEADLINE_MS = 7 * 24 * 3_600_000;

export interface BackfillProgress {
  table: string;
  rows: number;
  /** Estimated rows of this table (pg_class.reltuples), for the ETA. */
  estimate: number;
  tablesDone: number;
  tablesTotal: number;
  elapsedMs: number;
}

/**
 * Copies tables from the source inside an exported snapshot (the one the replication slot was
 * created with), so the copy and the stream that follows meet exactly at the slot's consistent
 * point. COPY out of the source streams straight into COPY into the target: memory stays flat.
 * Each table is truncated and copied in one target transaction that also records its from_lsn.
 */
export async function copyTables(options: {
  sourceUrl: string;
  target: pg.Client;
  snapshot: string;
  fromLsn: string;
  store: PipelineStore;
  tables: TablePlan[];
  onProgress?: (p: BackfillProgress) => void;
  /**
   * Make each target column's type the source's before copying (a re-copy after a type change
   * the target could not take): the table is empty then, so no value needs converting.
   */
  alignTypes?: boolean;
}): Promise<number> {
  const started = Date.now();
  let total = 0;
  let done = 0;
  for (const table of options.tables) {
    const source = new pg.Client({ connectionString: options.sourceUrl });
    await source.connect();
    try {
      await source.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      await source.query(`SET TRANSACTION SNAPSHOT '${options.snapshot.replace(/'/g, "''")}'`);
      const est = await source.query(`SELECT greatest(reltuples, 0)::bigint AS n FROM pg_class WHERE oid = $1::regclass`, [q(table.source)]);
      const estimate = Number(est.rows[0]?.n ?? 0);
      const srcCols = table.columns.map((c) => q(c.source)).join(', ');
      const dstCols = table.columns.map((c) => q(c.target)).join(', ');
      let rows = 0;
      let lastReport = 0;
      const counter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          // COPY text format: one row per line, embedded newlines are escaped.
          for (let i = 0; i < chunk.length; i++) if (chunk[i] === 10) rows++;
          const now = Date.now();
          if (options.onProgress && now - lastReport > 250) {
            lastReport = now;
            options.onProgress({ table: table.source, rows, estimate, tablesDone: done, tablesTotal: options.tables.length, elapsedMs: now - started });
          }
          cb(null, chunk);
        },
      });
      await options.target.query('BEGIN');
      try {
        // Copied rows carry the oldest commit time, so any change streamed after the copy wins
        // the conflict check (their real commit times are not known here).
        await options.target.query(`SELECT pg_replication_origin_xact_setup($1, '1970-01-01 00:00:00+00')`, [options.fromLsn]);
        await options.target.query(`TRUNCATE ${q(table.target)}`);
        if (options.alignTypes) {
          const { rows: current } = await options.target.query(`SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`, [q(table.target)]);
          const types = new Map(current.map((r) => [r.attname as string, r.type as string]));
          for (const c of table.columns) {
            if (types.has(c.target) && types.get(c.target) !== c.type) await options.target.query(`ALTER TABLE ${q(table.target)} ALTER COLUMN ${q(c.target)} TYPE ${c.type} USING NULL`);
          }
        }
        // A table's copy may take hours: no per-statement deadline on it (the worker's
        // connection has one for everything else).
        const into = Object.assign(copyFrom(`COPY ${q(table.target)} (${dstCols}) FROM STDIN`), { query_timeout: COPY_DEADLINE_MS });
        await pipeline(source.query(copyTo(`COPY (SELECT ${srcCols} FROM ${q(table.source)}) TO STDOUT`)), counter, options.target.query(into));
        await options.store.copied(options.target, table, options.fromLsn, rows);
        await options.target.query('COMMIT');
      } catch (err) {
        await options.target.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
      await source.query('COMMIT');
      total += rows;
      done++;
      options.onProgress?.({ table: table.source, rows, estimate: Math.max(estimate, rows), tablesDone: done, tablesTotal: options.tables.length, elapsedMs: Date.now() - started });
    } finally {
      await source.end().catch(() => undefined);
    }
  }
  return total;
}
