import type pg from 'pg';

/**
 * Bookkeeping in the target database (schema strangler_sync), written in the same transaction
 * as the rows it describes: the applied LSN can never say more than what is in the tables.
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
  status: 'backfilling' | 'streaming' | 'stopped' | 'failed';
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
  tables: Array<{ source: string; target: string; fromLsn: string; rowsCopied: number; paused: boolean; handoverLsn: string | null }>;
  lastVerification: { at: Date; ok: boolean; summary: unknown } | null;
}

export async function ensureStateSchema(client: pg.Client | pg.PoolClient): Promise<void> {
  await client.query(STATE_DDL);
}

export async function readPipelineState(client: pg.Client | pg.PoolClient, pipeline: string): Promise<PipelineState | null> {
  const exists = await client.query(`SELECT to_regclass('strangler_sync.pipelines') IS NOT NULL AS ok`);
  if (!exists.rows[0].ok) return null;
  const { rows } = await client.query(`SELECT *, applied_lsn::text AS applied, backfill_lsn::text AS backfill FROM strangler_sync.pipelines WHERE pipeline = $1`, [pipeline]);
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
    tables: tables.rows.map((t) => ({ source: t.source, target: t.target, fromLsn: t.from_lsn, rowsCopied: Number(t.rows_copied), paused: t.paused, handoverLsn: t.handover_lsn })),
    lastVerification: verification.rows[0] ?? null,
  };
}
