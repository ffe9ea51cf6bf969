import type pg from 'pg';
import type { SchemaChange, ShapeColumn } from './schema-change.ts';

/**
 * A pipeline's bookkeeping in its target database (schema strangler_sync), written in the same
 * transaction as the rows it describes: the applied LSN can never say more than what is in
 * the tables. Every statement the sync runs on it is here.
 */
export const STATE_DDL = `
  CREATE SCHEMA IF NOT EXISTS strangler_sync;
  CREATE TABLE IF NOT EXISTS strangler_sync.pipelines (
    pipeline             text PRIMARY KEY,
    slot                 text NOT NULL,
    publication          text NOT NULL,
    status               text NOT NULL,
    desired              text NOT NULL DEFAULT 'running',
    applied_lsn          pg_lsn,
    applied_at           timestamptz,
    source_commit_at     timestamptz,
    heartbeat_source_at  timestamptz,
    rows_applied         bigint NOT NULL DEFAULT 0,
    transactions_applied bigint NOT NULL DEFAULT 0,
    backfill_lsn         pg_lsn,
    backfilled_at        timestamptz,
    backfill_rows        bigint,
    last_error           text,
    last_error_at        timestamptz,
    worker               text,
    updated_at           timestamptz NOT NULL DEFAULT now()
  );
  CREATE TABLE IF NOT EXISTS strangler_sync.tables (
    pipeline    text NOT NULL,
    source      text NOT NULL,
    target      text NOT NULL,
    from_lsn    pg_lsn NOT NULL,
    rows_copied bigint NOT NULL,
    copied_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, source)
  );
  -- Copies of another service's tables: exactly one of the forward pipeline (from legacy) and
  -- the feed (from the owner) applies a table's changes; the other has it paused. Flipped
  -- in-band by a handover message, at the LSN recorded here.
  ALTER TABLE strangler_sync.tables ADD COLUMN IF NOT EXISTS paused boolean NOT NULL DEFAULT false;
  ALTER TABLE strangler_sync.tables ADD COLUMN IF NOT EXISTS handover_lsn pg_lsn;
  -- A verify's hold: the worker stops before the first commit at or past hold_lsn (once set;
  -- until then it pauses where it is), records where it stopped in held_lsn, and waits there
  -- until the hold is released or hold_until passes (a verify that died holds nothing for long).
  ALTER TABLE strangler_sync.pipelines ADD COLUMN IF NOT EXISTS hold_until timestamptz;
  ALTER TABLE strangler_sync.pipelines ADD COLUMN IF NOT EXISTS hold_lsn pg_lsn;
  ALTER TABLE strangler_sync.pipelines ADD COLUMN IF NOT EXISTS held_lsn pg_lsn;
  -- The shape each table is applied in (source column, target column, source type), as of the
  -- applied LSN: written with the rows, so a restart compares the stream with what was applied.
  ALTER TABLE strangler_sync.tables ADD COLUMN IF NOT EXISTS columns jsonb;
  -- A pipeline stopped at a schema change it must not apply over (a mapped column gone, a type
  -- the target cannot take): where, why and the fix; strangler sync resume sends the mapping
  -- to continue with.
  ALTER TABLE strangler_sync.pipelines ADD COLUMN IF NOT EXISTS stopped_reason text;
  ALTER TABLE strangler_sync.pipelines ADD COLUMN IF NOT EXISTS stopped_lsn pg_lsn;
  ALTER TABLE strangler_sync.pipelines ADD COLUMN IF NOT EXISTS resume_mapping jsonb;
  ALTER TABLE strangler_sync.pipelines ADD COLUMN IF NOT EXISTS resume_at timestamptz;
  CREATE TABLE IF NOT EXISTS strangler_sync.schema_changes (
    id         bigserial PRIMARY KEY,
    pipeline   text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    lsn        pg_lsn,
    table_name text NOT NULL,
    kind       text NOT NULL,
    column_name text NOT NULL,
    detail     text NOT NULL,
    action     text NOT NULL
  );
  CREATE TABLE IF NOT EXISTS strangler_sync.conflicts (
    id               bigserial PRIMARY KEY,
    pipeline         text NOT NULL,
    at               timestamptz NOT NULL DEFAULT now(),
    table_name       text NOT NULL,
    key              jsonb NOT NULL,
    kind             text NOT NULL,
    source_commit_at timestamptz,
    target_commit_at timestamptz,
    resolution       text NOT NULL
  );
  CREATE TABLE IF NOT EXISTS strangler_sync.verifications (
    id        bigserial PRIMARY KEY,
    pipeline  text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    ok        boolean NOT NULL,
    summary   jsonb NOT NULL
  );
`;

export interface PipelineState {
  pipeline: string;
  slot: string;
  publication: string;
  status: 'backfilling' | 'streaming' | 'stopped' | 'failed' | 'schema-stopped';
  desired: 'running' | 'stopped';
  appliedLsn: string | null;
  appliedAt: Date | null;
  sourceCommitAt: Date | null;
  heartbeatSourceAt: Date | null;
  rowsApplied: number;
  transactionsApplied: number;
  backfillLsn: string | null;
  backfilledAt: Date | null;
  backfillRows: number | null;
  lastError: string | null;
  lastErrorAt: Date | null;
  worker: string | null;
  /** Stopped at a schema change: why (with the fix) and the source position it stopped at. */
  stoppedReason: string | null;
  stoppedLsn: string | null;
  tables: Array<{ source: string; target: string; fromLsn: string; rowsCopied: number; paused: boolean; handoverLsn: string | null }>;
  lastVerification: { at: Date; ok: boolean; summary: unknown } | null;
}

type Client = pg.Client | pg.PoolClient;

export async function ensureStateSchema(client: Client): Promise<void> {
  await client.query(STATE_DDL);
}

export async function readPipelineState(client: Client, pipeline: string): Promise<PipelineState | null> {
  const exists = await client.query(`SELECT to_regclass('strangler_sync.pipelines') IS NOT NULL AS ok`);
  if (!exists.rows[0].ok) return null;
  const { rows } = await client.query(`SELECT *, applied_lsn::text AS applied, backfill_lsn::text AS backfill, stopped_lsn::text AS stopped_lsn FROM strangler_sync.pipelines WHERE pipeline = $1`, [pipeline]);
  if (!rows[0]) return null;
  const r = rows[0];
  const tables = await client.query(`SELECT source, target, from_lsn::text AS from_lsn, rows_copied, paused, handover_lsn::text AS handover_lsn FROM strangler_sync.tables WHERE pipeline = $1 ORDER BY source`, [pipeline]);
  const verification = await client.query(`SELECT at, ok, summary FROM strangler_sync.verifications WHERE pipeline = $1 ORDER BY id DESC LIMIT 1`, [pipeline]);
  return {
    pipeline: r.pipeline,
    slot: r.slot,
    publication: r.publication,
    status: r.status,
    desired: r.desired,
    appliedLsn: r.applied,
    appliedAt: r.applied_at,
    sourceCommitAt: r.source_commit_at,
    heartbeatSourceAt: r.heartbeat_source_at,
    rowsApplied: Number(r.rows_applied),
    transactionsApplied: Number(r.transactions_applied),
    backfillLsn: r.backfill,
    backfilledAt: r.backfilled_at,
    backfillRows: r.backfill_rows === null ? null : Number(r.backfill_rows),
    lastError: r.last_error,
    lastErrorAt: r.last_error_at,
    worker: r.worker,
    stoppedReason: r.stopped_reason ?? null,
    stoppedLsn: r.stopped_lsn ?? null,
    tables: tables.rows.map((t) => ({ source: t.source, target: t.target, fromLsn: t.from_lsn, rowsCopied: Number(t.rows_copied), paused: t.paused, handoverLsn: t.handover_lsn })),
    lastVerification: verification.rows[0] ?? null,
  };
}

/** What one applied group of source transactions adds to its pipeline's row. */
export interface AppliedGroup {
  /** The end of the group's last commit: where the stream resumes. */
  lsn: string;
  /** The last source commit's time. */
  sourceCommitAt: Date | null;
  rows: number;
  transactions: number;
  /** The source time of the newest heartbeat in the group. */
  heartbeat: string | null;
}

/** What `strangler sync resume` hands a stopped worker: the mapping to go on with, and tables to copy again first. */
export interface ResumeRequest {
  tables: unknown[];
  /** Source tables copied again in a snapshot before the stream goes on (after a type change the target could not take). */
  recopy: string[];
}

/** A table as a plan has it: its columns give the shape it is first applied in. */
interface TableShape {
  source: string;
  target: string;
  columns: Array<{ source: string; target: string; type: string }>;
}

/** The shape a planned table starts in (its columns as the source's catalog had them). */
export function shapeOf(table: TableShape): ShapeColumn[] {
  return table.columns.map((c) => ({ source: c.source, target: c.target, type: c.type, status: 'mapped' as const }));
}

/** The statements of one pipeline, bound to its name. */
export function pipelineStore(pipeline: string) {
  return {
    /** A pipeline that starts at `lsn` with nothing to copy (reverse sync, feeds). */
    async startAt(client: Client, names: { slot: string; publication: string }, lsn: string): Promise<void> {
      await client.query(
        `INSERT INTO strangler_sync.pipelines (pipeline, slot, publication, status, applied_lsn) VALUES ($1, $2, $3, 'streaming', $4)
         ON CONFLICT (pipeline) DO UPDATE SET status = 'streaming', applied_lsn = excluded.applied_lsn, updated_at = now()`,
        [pipeline, names.slot, names.publication, lsn],
      );
    },

    /** A table the stream applies from `fromLsn` on, without a copy (paused: another pipeline applies it now). */
    async tableFrom(client: Client, table: TableShape, fromLsn: string, paused: boolean): Promise<void> {
      await client.query(
        `INSERT INTO strangler_sync.tables (pipeline, source, target, from_lsn, rows_copied, paused, columns) VALUES ($1, $2, $3, $4, 0, $5, $6)
         ON CONFLICT (pipeline, source) DO UPDATE SET from_lsn = excluded.from_lsn, paused = excluded.paused, handover_lsn = NULL, columns = excluded.columns`,
        [pipeline, table.source, table.target, fromLsn, paused, JSON.stringify(shapeOf(table))],
      );
    },

    /** A full backfill starts: the applied position is forgotten, the copies start over. */
    async backfilling(client: Client, names: { slot: string; publication: string }): Promise<void> {
      await client.query(
        `INSERT INTO strangler_sync.pipelines (pipeline, slot, publication, status) VALUES ($1, $2, $3, 'backfilling')
         ON CONFLICT (pipeline) DO UPDATE SET status = 'backfilling', applied_lsn = NULL, updated_at = now()`,
        [pipeline, names.slot, names.publication],
      );
      await client.query(`DELETE FROM strangler_sync.tables WHERE pipeline = $1`, [pipeline]);
    },

    /** A table copied in a snapshot: its changes are applied from `fromLsn` (the snapshot's point) on. In the copy's transaction. */
    async copied(client: Client, table: TableShape, fromLsn: string, rows: number): Promise<void> {
      await client.query(
        `INSERT INTO strangler_sync.tables (pipeline, source, target, from_lsn, rows_copied, columns) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (pipeline, source) DO UPDATE SET target = excluded.target, from_lsn = excluded.from_lsn, rows_copied = excluded.rows_copied, copied_at = now(), columns = excluded.columns`,
        [pipeline, table.source, table.target, fromLsn, rows, JSON.stringify(shapeOf(table))],
      );
    },

    async backfilled(client: Client, lsn: string, rows: number): Promise<void> {
      await client.query(
        `UPDATE strangler_sync.pipelines SET status = 'streaming', applied_lsn = $2, backfill_lsn = $2, backfilled_at = now(), backfill_rows = $3, updated_at = now() WHERE pipeline = $1`,
        [pipeline, lsn, rows],
      );
    },

    /** source table → the LSN from which its changes are applied (a table copied later skips what its copy holds). */
    async fromLsns(client: Client): Promise<Map<string, string>> {
      const { rows } = await client.query(`SELECT source, from_lsn::text AS from_lsn FROM strangler_sync.tables WHERE pipeline = $1`, [pipeline]);
      return new Map(rows.map((r) => [r.source as string, r.from_lsn as string]));
    },

    async paused(client: Client): Promise<Set<string>> {
      const { rows } = await client.query(`SELECT source FROM strangler_sync.tables WHERE pipeline = $1 AND paused`, [pipeline]);
      return new Set(rows.map((r) => r.source as string));
    },

    /** Pauses or resumes tables at a handover message (inside the transaction that applies it). */
    async setPaused(client: Client, sources: string[], paused: boolean, lsn: string): Promise<void> {
      await client.query(`UPDATE strangler_sync.tables SET paused = $3, handover_lsn = $4 WHERE pipeline = $1 AND source = ANY($2)`, [pipeline, sources, paused, lsn]);
    },

    /** A worker starts streaming (a restart also ends a stop at a schema change: it re-reads the mapping). */
    async streaming(client: Client, worker: string): Promise<void> {
      await client.query(`UPDATE strangler_sync.pipelines SET status = 'streaming', desired = 'running', worker = $2, stopped_reason = NULL, stopped_lsn = NULL, resume_mapping = NULL, resume_at = NULL, updated_at = now() WHERE pipeline = $1`, [pipeline, worker]);
    },

    async stopped(client: Client): Promise<void> {
      await client.query(`UPDATE strangler_sync.pipelines SET status = 'stopped', worker = NULL, updated_at = now() WHERE pipeline = $1 AND status = 'streaming'`, [pipeline]);
    },

    async desired(client: Client): Promise<string | null> {
      const { rows } = await client.query(`SELECT desired FROM strangler_sync.pipelines WHERE pipeline = $1`, [pipeline]);
      return rows[0]?.desired ?? null;
    },

    async worker(client: Client): Promise<string | null> {
      const { rows } = await client.query(`SELECT worker FROM strangler_sync.pipelines WHERE pipeline = $1`, [pipeline]);
      return rows[0]?.worker ?? null;
    },

    async lastError(client: Client, message: string): Promise<void> {
      await client.query(`UPDATE strangler_sync.pipelines SET last_error = $2, last_error_at = now() WHERE pipeline = $1`, [pipeline, message]);
    },

    /**
     * Ends the group's transaction in one round trip: the replication origin's position (the
     * source commit LSN and the group's earliest source commit time in microseconds), the
     * pipeline's row, COMMIT. On a busy server every round trip is a sleep and a wake-up of the
     * backend, which cost more than the work itself. Says whether a verify asks the worker to hold.
     */
    async appliedAndCommit(client: Client, group: AppliedGroup, originCommitUs: bigint): Promise<boolean> {
      const lit = (v: string | null) => (v === null ? 'NULL' : client.escapeLiteral(v));
      const lsn = lit(group.lsn);
      const results = (await client.query(
        `SELECT pg_replication_origin_xact_setup(${lsn}, timestamptz 'epoch' + ${originCommitUs.toString()} * interval '1 microsecond');
         UPDATE strangler_sync.pipelines SET applied_lsn = ${lsn}, applied_at = now(), source_commit_at = coalesce(${lit(group.sourceCommitAt?.toISOString() ?? null)}::timestamptz, source_commit_at),
                rows_applied = rows_applied + ${Math.trunc(group.rows)}, transactions_applied = transactions_applied + ${Math.trunc(group.transactions)},
                heartbeat_source_at = coalesce(${lit(group.heartbeat)}::timestamptz, heartbeat_source_at), updated_at = now()
          WHERE pipeline = ${lit(pipeline)} RETURNING coalesce(hold_until > now(), false) AS hold;
         COMMIT`,
      )) as unknown as pg.QueryResult[];
      return results[1]?.rows[0]?.hold ?? false;
    },

    /**
     * One verify of a pipeline at a time: a second one waits here (a session lock on the target,
     * released when the verify's connection ends). Two at once would move the worker's hold under
     * each other's reads: the second's point is past the first's, so the first would read a target
     * that no longer stands still and call its own ranges different.
     */
    async verifyTurn(client: Client, onQueued?: () => void): Promise<void> {
      const key = `strangler_verify:${pipeline}`;
      if ((await client.query(`SELECT pg_try_advisory_lock(hashtext($1)) AS ok`, [key])).rows[0].ok) return;
      onQueued?.();
      await client.query(`SELECT pg_advisory_lock(hashtext($1))`, [key]);
    },

    /** A verify asks the worker to pause where it is, for at most `leaseMs` (renewed while it reads). */
    async requestHold(client: Client, leaseMs: number): Promise<void> {
      await client.query(`UPDATE strangler_sync.pipelines SET hold_until = now() + $2 * interval '1 millisecond', hold_lsn = NULL, held_lsn = NULL WHERE pipeline = $1`, [pipeline, leaseMs]);
    },

    async renewHold(client: Client, leaseMs: number): Promise<void> {
      await client.query(`UPDATE strangler_sync.pipelines SET hold_until = now() + $2 * interval '1 millisecond' WHERE pipeline = $1 AND hold_until IS NOT NULL`, [pipeline, leaseMs]);
    },

    /** Where the worker must stop: before the first commit at or past `lsn`. */
    async holdAt(client: Client, lsn: string): Promise<void> {
      await client.query(`UPDATE strangler_sync.pipelines SET hold_lsn = $2 WHERE pipeline = $1`, [pipeline, lsn]);
    },

    async releaseHold(client: Client): Promise<void> {
      await client.query(`UPDATE strangler_sync.pipelines SET hold_until = NULL, hold_lsn = NULL, held_lsn = NULL WHERE pipeline = $1`, [pipeline]);
    },

    /** The hold as the worker and the verify see it: active (not released, not expired), where to stop, where the worker stands. */
    async hold(client: Client): Promise<{ active: boolean; at: string | null; held: string | null }> {
      const { rows } = await client.query(`SELECT coalesce(hold_until > now(), false) AS active, hold_lsn::text AS at, held_lsn::text AS held FROM strangler_sync.pipelines WHERE pipeline = $1`, [pipeline]);
      return { active: rows[0]?.active ?? false, at: rows[0]?.at ?? null, held: rows[0]?.held ?? null };
    },

    /** The worker stands at `lsn` (everything before it applied, nothing after). */
    async held(client: Client, lsn: string): Promise<void> {
      await client.query(`UPDATE strangler_sync.pipelines SET held_lsn = $2 WHERE pipeline = $1 AND hold_until > now()`, [pipeline, lsn]);
    },

    /** The shape each table is applied in (source name → columns). */
    async shapes(client: Client): Promise<Map<string, ShapeColumn[]>> {
      const { rows } = await client.query(`SELECT source, columns FROM strangler_sync.tables WHERE pipeline = $1 AND columns IS NOT NULL`, [pipeline]);
      return new Map(rows.map((r) => [r.source as string, r.columns as ShapeColumn[]]));
    },

    /** A table's shape from here on, and what changed, in the transaction that applies it. */
    async shapeChanged(client: Client, source: string, target: string, shape: ShapeColumn[], lsn: string, changes: SchemaChange[]): Promise<void> {
      await client.query(
        `INSERT INTO strangler_sync.tables (pipeline, source, target, from_lsn, rows_copied, columns) VALUES ($1, $2, $3, $4, 0, $5)
         ON CONFLICT (pipeline, source) DO UPDATE SET columns = excluded.columns`,
        [pipeline, source, target, lsn, JSON.stringify(shape)],
      );
      for (const c of changes) await client.query(`INSERT INTO strangler_sync.schema_changes (pipeline, lsn, table_name, kind, column_name, detail, action) VALUES ($1, $2, $3, $4, $5, $6, $7)`, [pipeline, lsn, source, c.kind, c.column, c.detail, c.action]);
    },

    /** The pipeline stops before the transaction at `lsn`: a schema change it must not apply over. */
    async schemaStopped(client: Client, reason: string, lsn: string, table: string, changes: SchemaChange[]): Promise<void> {
      await client.query(`UPDATE strangler_sync.pipelines SET status = 'schema-stopped', stopped_reason = $2, stopped_lsn = $3, last_error = $2, last_error_at = now(), updated_at = now() WHERE pipeline = $1`, [pipeline, reason, lsn]);
      for (const c of changes) await client.query(`INSERT INTO strangler_sync.schema_changes (pipeline, lsn, table_name, kind, column_name, detail, action) VALUES ($1, $2, $3, $4, $5, $6, $7)`, [pipeline, lsn, table, c.kind, c.column, c.detail, c.action]);
    },

    /** `strangler sync resume`: the mapping to go on with, for the stopped worker to take. */
    async requestResume(client: Client, request: ResumeRequest): Promise<boolean> {
      const r = await client.query(`UPDATE strangler_sync.pipelines SET resume_mapping = $2, resume_at = now() WHERE pipeline = $1 RETURNING status`, [pipeline, JSON.stringify(request)]);
      return (r.rowCount ?? 0) > 0;
    },

    /** A resume asked for after `since`; null when none. */
    async resumeRequest(client: Client, since: Date): Promise<ResumeRequest | null> {
      const { rows } = await client.query(`SELECT resume_mapping FROM strangler_sync.pipelines WHERE pipeline = $1 AND resume_at > $2`, [pipeline, since]);
      return rows[0]?.resume_mapping ?? null;
    },

    async resumed(client: Client): Promise<void> {
      await client.query(`UPDATE strangler_sync.pipelines SET status = 'streaming', stopped_reason = NULL, stopped_lsn = NULL, resume_mapping = NULL, resume_at = NULL, updated_at = now() WHERE pipeline = $1`, [pipeline]);
    },

    /** The latest schema changes seen, newest first. */
    async schemaChanges(client: Client, limit = 20): Promise<Array<SchemaChange & { table: string; lsn: string | null; at: Date }>> {
      const { rows } = await client.query(`SELECT table_name, kind, column_name, detail, action, lsn::text AS lsn, at FROM strangler_sync.schema_changes WHERE pipeline = $1 ORDER BY id DESC LIMIT $2`, [pipeline, limit]);
      return rows.map((r) => ({ table: r.table_name, kind: r.kind, column: r.column_name, detail: r.detail, action: r.action, lsn: r.lsn, at: r.at }));
    },

    async conflict(client: Client, c: { table: string; key: Record<string, unknown>; kind: string; sourceAt: string; targetAt: string }): Promise<void> {
      await client.query(
        `INSERT INTO strangler_sync.conflicts (pipeline, table_name, key, kind, source_commit_at, target_commit_at, resolution) VALUES ($1, $2, $3, $4, $5, $6, 'kept the target row: its write is later')`,
        [pipeline, c.table, JSON.stringify(c.key), c.kind, c.sourceAt, c.targetAt],
      );
    },
  };
}

export type PipelineStore = ReturnType<typeof pipelineStore>;

/** Whether another pipeline of this database has these copies paused: null when it has none of them. */
export async function copiesPausedIn(client: Client, pipeline: string, copies: string[]): Promise<boolean | null> {
  const { rows } = await client.query(`SELECT count(*)::int AS n, count(*) FILTER (WHERE paused)::int AS paused FROM strangler_sync.tables WHERE pipeline = $1 AND target = ANY($2)`, [pipeline, copies]);
  return rows[0].n === 0 ? null : rows[0].paused === rows[0].n;
}

/** Target tables a feed of `service` applies to now (a feed pipeline of this database has them unpaused). */
export async function tablesFedByOwner(client: Client, service: string): Promise<Set<string>> {
  const { rows } = await client.query(`SELECT target FROM strangler_sync.tables WHERE pipeline LIKE $1 AND NOT paused`, [`${service}:feed:%`]);
  return new Set(rows.map((r) => r.target as string));
}
