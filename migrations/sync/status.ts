import pg from 'pg';
import { StranglerError } from '../../core/errors.ts';
import type { ResolvedConfig, ResolvedService } from '../../core/config/load.ts';
import { lsnDistance } from './lsn.ts';
import { FENCE_PREFIX } from './messages.ts';
import { pipelineNames, type Direction } from './plan.ts';
import { pipelineStore, readPipelineState, type PipelineState } from './pipeline-store.ts';

export interface SyncStatus {
  service: string;
  pipeline: string;
  state: 'not started' | PipelineState['status'];
  /** A worker holds the slot right now. */
  active: boolean;
  appliedLsn: string | null;
  lagBytes: number | null;
  /** Seconds since the source time of the newest heartbeat applied (heartbeats every 0.5 s). */
  lagSeconds: number | null;
  rowsApplied: number;
  slotRetainedBytes: number | null;
  slotRetainWarning: string | null;
  lastError: string | null;
  lastVerification: PipelineState['lastVerification'];
  /** Rows written on both sides within the lag (resolved: the later commit wins). */
  conflicts: number;
  /** Stopped at a schema change: why, with the fix, and since which source position. */
  stoppedReason: string | null;
  stoppedLsn: string | null;
  /** Schema changes seen (newest first, at most 20): new columns ignored or added, widenings, stops. */
  schemaChanges: Array<{ table: string; kind: string; column: string; detail: string; action: string; lsn: string | null }>;
}

/** The forward sync of a service as the legacy database and the service database see it. */
export async function syncStatus(config: ResolvedConfig, service: ResolvedService, direction: Direction = 'forward'): Promise<SyncStatus> {
  const [sourceUrl, targetUrl] = direction === 'forward' ? [config.legacy.databaseUrl, service.databaseUrl] : [service.databaseUrl, config.legacy.databaseUrl];
  const names = pipelineNames(service.name, sourceUrl, direction);
  const source = new pg.Client({ connectionString: sourceUrl });
  const target = new pg.Client({ connectionString: targetUrl });
  try {
    await Promise.all([source.connect(), target.connect()]);
    const [state, head, slot] = await Promise.all([
      readPipelineState(target, names.pipeline),
      source.query(`SELECT pg_current_wal_lsn()::text AS lsn, now() AS now`),
      source.query(`SELECT active, (pg_current_wal_lsn() - restart_lsn)::bigint AS retained FROM pg_replication_slots WHERE slot_name = $1`, [names.slot]),
    ]);
    const retained = slot.rows[0] ? Number(slot.rows[0].retained) : null;
    const conflicts = state
      ? Number((await target.query(`SELECT count(*) AS n FROM strangler_sync.conflicts WHERE pipeline = $1`, [names.pipeline]).catch(() => ({ rows: [{ n: 0 }] }))).rows[0].n)
      : 0;
    const schemaChanges = state ? await pipelineStore(names.pipeline).schemaChanges(target).catch(() => []) : [];
    const now: Date = head.rows[0].now;
    return {
      service: service.name,
      pipeline: names.pipeline,
      state: state?.status ?? 'not started',
      active: slot.rows[0]?.active ?? false,
      appliedLsn: state?.appliedLsn ?? null,
      lagBytes: state?.appliedLsn ? lsnDistance(state.appliedLsn, head.rows[0].lsn) : null,
      lagSeconds: state?.heartbeatSourceAt ? Math.max(0, (now.getTime() - state.heartbeatSourceAt.getTime()) / 1000) : null,
      rowsApplied: state?.rowsApplied ?? 0,
      slotRetainedBytes: retained,
      slotRetainWarning:
        retained !== null && retained > config.sync.slotRetainWarnBytes
          ? `slot ${names.slot} retains ${(retained / 1024 / 1024).toFixed(0)} MB of WAL on the legacy server; start its worker (strangler sync start ${service.name}) or drop it (strangler sync cleanup ${service.name})`
          : null,
      lastError: state?.lastError ?? null,
      lastVerification: state?.lastVerification ?? null,
      conflicts,
      stoppedReason: state?.stoppedReason ?? null,
      stoppedLsn: state?.stoppedLsn ?? null,
      schemaChanges: schemaChanges.map(({ table, kind, column, detail, action, lsn }) => ({ table, kind, column, detail, action, lsn })),
    };
  } finally {
    await Promise.all([source.end().catch(() => undefined), target.end().catch(() => undefined)]);
  }
}

/** Asks a running worker to stop (it polls its control row every second). */
export async function requestStop(config: ResolvedConfig, service: ResolvedService, direction: Direction = 'forward'): Promise<boolean> {
  const target = new pg.Client({ connectionString: direction === 'forward' ? service.databaseUrl : config.legacy.databaseUrl });
  await target.connect();
  try {
    const exists = await target.query(`SELECT to_regclass('strangler_sync.pipelines') IS NOT NULL AS ok`);
    if (!exists.rows[0].ok) return false;
    const r = await target.query(`UPDATE strangler_sync.pipelines SET desired = 'stopped' WHERE pipeline = $1`, [pipelineNames(service.name, direction === 'forward' ? config.legacy.databaseUrl : service.databaseUrl, direction).pipeline]);
    return (r.rowCount ?? 0) > 0;
  } finally {
    await target.end();
  }
}

/** Drops the slot and the publication on the legacy database (refused while a worker streams). */
export async function cleanupPipeline(config: ResolvedConfig, service: ResolvedService, direction: Direction = 'forward'): Promise<{ slot: boolean; publication: boolean }> {
  const [sourceUrl, targetUrl] = direction === 'forward' ? [config.legacy.databaseUrl, service.databaseUrl] : [service.databaseUrl, config.legacy.databaseUrl];
  const names = pipelineNames(service.name, sourceUrl, direction);
  const source = new pg.Client({ connectionString: sourceUrl });
  await source.connect();
  try {
    const slot = await source.query(`SELECT active FROM pg_replication_slots WHERE slot_name = $1`, [names.slot]);
    if (slot.rows[0]?.active) {
      throw new StranglerError(`slot ${names.slot} is in use by a running worker; run: strangler sync stop ${service.name}${direction === 'reverse' ? ' --reverse' : ''}, then cleanup`, 'CONFLICT');
    }
    if (slot.rowCount) await source.query(`SELECT pg_drop_replication_slot($1)`, [names.slot]);
    const pub = await source.query(`SELECT 1 FROM pg_publication WHERE pubname = $1`, [names.publication]);
    if (pub.rowCount) await source.query(`DROP PUBLICATION "${names.publication}"`);
    const target = new pg.Client({ connectionString: targetUrl });
    await target.connect();
    try {
      const exists = await target.query(`SELECT to_regclass('strangler_sync.pipelines') IS NOT NULL AS ok`);
      if (exists.rows[0].ok) {
        await target.query(`DELETE FROM strangler_sync.tables WHERE pipeline = $1`, [names.pipeline]);
        await target.query(`DELETE FROM strangler_sync.pipelines WHERE pipeline = $1`, [names.pipeline]);
      }
      // The applier's replication origin (cluster-wide): dropped once no session uses it.
      const origin = pipelineNames(service.name, sourceUrl, direction, targetUrl).origin;
      await target.query(`SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = $1`, [origin]).catch(() => undefined);
    } finally {
      await target.end();
    }
    return { slot: (slot.rowCount ?? 0) > 0, publication: (pub.rowCount ?? 0) > 0 };
  } finally {
    await source.end();
  }
}

/**
 * Drains a pipeline to a fence: a logical message written on its source now, then a wait until
 * the pipeline has applied past it. Everything committed on the source before the call is then
 * on the target. Returns the time it took, or null when it did not drain within the timeout.
 */
export async function drainPipeline(config: ResolvedConfig, service: ResolvedService, direction: Direction, timeoutMs: number): Promise<number | null> {
  const [sourceUrl, targetUrl] = direction === 'forward' ? [config.legacy.databaseUrl, service.databaseUrl] : [service.databaseUrl, config.legacy.databaseUrl];
  const names = pipelineNames(service.name, sourceUrl, direction);
  const source = new pg.Client({ connectionString: sourceUrl });
  const target = new pg.Client({ connectionString: targetUrl });
  const started = Date.now();
  try {
    await Promise.all([source.connect(), target.connect()]);
    const { rows } = await source.query(`SELECT pg_logical_emit_message(true, $1, clock_timestamp()::text)::text AS lsn`, [FENCE_PREFIX]);
    const fence = rows[0].lsn as string;
    while (Date.now() - started < timeoutMs) {
      const r = await target.query(`SELECT applied_lsn::text AS lsn FROM strangler_sync.pipelines WHERE pipeline = $1`, [names.pipeline]).catch(() => ({ rows: [] as Array<{ lsn: string }> }));
      if (r.rows[0]?.lsn && lsnDistance(r.rows[0].lsn, fence) === 0) return Date.now() - started;
      await new Promise((ok) => setTimeout(ok, 5));
    }
    return null;
  } finally {
    await Promise.all([source.end().catch(() => undefined), target.end().catch(() => undefined)]);
  }
}

/**
 * `strangler sync resume`: hands a pipeline stopped at a schema change the mapping strangler.yaml
 * has now; its worker re-plans with it and goes on from where it stopped (or stops again, saying
 * why). Returns where and why it had stopped, or null when it was not stopped.
 */
export async function requestResume(config: ResolvedConfig, service: ResolvedService, direction: Direction = 'forward', recopy: string[] = []): Promise<{ lsn: string | null; reason: string } | null> {
  const [sourceUrl, targetUrl] = direction === 'forward' ? [config.legacy.databaseUrl, service.databaseUrl] : [service.databaseUrl, config.legacy.databaseUrl];
  const names = pipelineNames(service.name, sourceUrl, direction);
  const target = new pg.Client({ connectionString: targetUrl });
  await target.connect();
  try {
    const state = await readPipelineState(target, names.pipeline);
    if (!state) throw new StranglerError(`no ${direction} sync of ${service.name} has been started`, 'NOT_FOUND');
    if (state.status !== 'schema-stopped' || !state.stoppedReason) return null;
    const unknown = recopy.filter((t) => !state.tables.some((x) => x.source === t));
    if (unknown.length) throw new StranglerError(`--recopy ${unknown.join(', ')}: not a source table of this pipeline (its tables: ${state.tables.map((t) => t.source).join(', ')})`, 'BAD_INPUT');
    if (recopy.length && direction === 'reverse') throw new StranglerError(`--recopy copies into the service's database; the reverse sync's target is the monolith's, which the toolkit never rewrites`, 'BAD_INPUT');
    await pipelineStore(names.pipeline).requestResume(target, { tables: service.tables, recopy });
    return { lsn: state.stoppedLsn, reason: state.stoppedReason };
  } finally {
    await target.end();
  }
}
