import type pg from 'pg';
import { StranglerError } from '../core/errors.ts';
import { insertAudit, insertChecks, type AuditEntry, type Planned } from './route-change.ts';
import type { CheckResult, Phase, ServiceStatus } from './state-machine.ts';

/** Progress of a progressive canary, kept with the phase so `--resume` continues where it stopped. */
export interface Progress {
  steps: number[];
  index: number;
  failures: number;
  intervalMs: number;
  threshold: number;
  maxErrorRate?: number;
  maxP99Ms?: number;
  startedAt: string;
}

/** A bake under way after a switch (cutover/bake.ts), kept with the switched phase for `status`. */
export interface Bake {
  startedAt: string;
  until: string;
  intervalMs: number;
  threshold: number;
  failures: number;
  /** Legacy's figures on the prefix before the switch: what the service is held to. */
  baseline: { requests: number; errors: number; p99Ms: number | null; p90Ms: number | null };
  holder: string;
}

export interface StoredStatus extends ServiceStatus {
  service: string;
  prefix: string;
  phaseSince: Date | null;
  progress: Progress | null;
  /** What a change planned from this status expects to find when it commits (compare-and-set). */
  planned: Planned;
  /** The bake of a switched service, while one runs (or ran and was interrupted). */
  bake: Bake | null;
}

/** The control database's view of services, audit and locks (schema from strangler.yaml). */
export function controlStore(pool: pg.Pool, schema: string) {
  const s = `"${schema}"`;
  return {
    async status(service: string, prefix: string): Promise<StoredStatus> {
      const { rows } = await pool.query(
        `SELECT st.phase, st.phase_since, st.progress, r.weight::float8 AS weight, r.methods, coalesce(r.version, 0)::int AS route_version
           FROM (SELECT 1) one LEFT JOIN ${s}.service_state st ON st.service = $1 LEFT JOIN ${s}.routes r ON r.prefix = $2`,
        [service, prefix],
      );
      const routeVersion = rows[0].route_version as number;
      if (!rows[0].phase) return { service, prefix, phase: 'legacy', weight: 0, phaseSince: null, progress: null, bake: null, planned: { phase: 'legacy', routeVersion } };
      const phase = rows[0].phase as Phase;
      // The progress column holds a progressive canary's steps, or once switched, its bake.
      const bake = phase === 'switched' && rows[0].progress?.bake ? (rows[0].progress.bake as Bake) : null;
      const methods = phase === 'canary' ? ((rows[0].methods as string[] | null) ?? null) : null;
      return { service, prefix, phase, weight: phase === 'canary' ? Number(rows[0].weight ?? 0) : phase === 'switched' || phase === 'finalized' ? 100 : 0, methods, phaseSince: rows[0].phase_since, progress: bake ? null : rows[0].progress, bake, planned: { phase, routeVersion } };
    },

    /** Records (or clears) the bake of a switched service; a no-op once it left the switched phase (rolled back). */
    async writeBake(service: string, bake: Bake | null): Promise<void> {
      await pool.query(`UPDATE ${s}.service_state SET progress = $2, updated_at = now() WHERE service = $1 AND phase = 'switched'`, [service, bake ? JSON.stringify({ bake }) : null]);
    },

    async writeProgress(service: string, progress: Progress | null): Promise<void> {
      await pool.query(`UPDATE ${s}.service_state SET progress = $2, updated_at = now() WHERE service = $1`, [service, progress ? JSON.stringify(progress) : null]);
    },

    /** An audit row of something that changed no route (a bake that passed): through the one audit writer. */
    async audit(entry: AuditEntry): Promise<number> {
      return insertAudit(pool, schema, entry);
    },

    /** Check results outside a change (the analyses of a progressive canary). */
    async recordAnalysis(service: string, checks: readonly CheckResult[]): Promise<void> {
      await insertChecks(pool, schema, null, service, checks, false);
    },

    async history(prefix: string | null, limit: number) {
      const { rows } = await pool.query(
        `SELECT id::int AS id, at, actor, command, service, prefix, from_phase, to_phase, from_route, to_route, route_version::int AS route_version, reason, forced, outcome, details
           FROM ${s}.audit_log WHERE ($1::text IS NULL OR prefix = $1) ORDER BY id DESC LIMIT $2`,
        [prefix, limit],
      );
      return rows;
    },

    /**
     * The recorded canary and bake analyses (one per interval a progressive canary or a bake
     * analysed, and those a change's preflight ran), newest first: the dashboard's analysis list.
     */
    async analyses(limit: number): Promise<Array<{ id: number; at: Date; service: string; name: string; ok: boolean; retriable: boolean; reason: string }>> {
      const { rows } = await pool.query(
        `SELECT id::int AS id, at, service, name, ok, retriable, reason FROM ${s}.check_results WHERE name IN ('canary-analysis', 'bake-analysis') ORDER BY id DESC LIMIT $1`,
        [limit],
      );
      return rows;
    },

    /**
     * A lease on a prefix: a second change while one is in progress is refused. The lease
     * expires (a killed process does not hold it forever) and is renewed by long commands.
     */
    async lock(prefix: string, holder: string, command: string, leaseMs: number): Promise<void> {
      const { rows } = await pool.query(
        `INSERT INTO ${s}.prefix_locks (prefix, holder, command, expires_at) VALUES ($1, $2, $3, now() + $4 * interval '1 millisecond')
         ON CONFLICT (prefix) DO UPDATE SET holder = excluded.holder, command = excluded.command, acquired_at = now(), expires_at = excluded.expires_at
           WHERE ${s}.prefix_locks.expires_at < now() OR ${s}.prefix_locks.holder = excluded.holder
         RETURNING holder`,
        [prefix, holder, command, leaseMs],
      );
      if (rows.length === 0) {
        const held = await pool.query(`SELECT holder, command, acquired_at FROM ${s}.prefix_locks WHERE prefix = $1`, [prefix]);
        const h = held.rows[0];
        throw new StranglerError(`${prefix} is being changed by ${h?.holder} (${h?.command}, since ${h?.acquired_at?.toISOString?.() ?? '?'}); wait for it, or roll back: strangler rollback ${prefix} --reason ...`, 'CONFLICT');
      }
    },

    /** Who holds the prefix's lock now (an expired lease holds nothing). */
    async lockHolder(prefix: string): Promise<string | null> {
      const { rows } = await pool.query(`SELECT holder FROM ${s}.prefix_locks WHERE prefix = $1 AND expires_at > now()`, [prefix]);
      return rows[0]?.holder ?? null;
    },

    async renew(prefix: string, holder: string, leaseMs: number): Promise<void> {
      await pool.query(`UPDATE ${s}.prefix_locks SET expires_at = now() + $3 * interval '1 millisecond' WHERE prefix = $1 AND holder = $2`, [prefix, holder, leaseMs]);
    },

    async unlock(prefix: string, holder: string): Promise<void> {
      await pool.query(`DELETE FROM ${s}.prefix_locks WHERE prefix = $1 AND holder = $2`, [prefix, holder]);
    },
  };
}

export type ControlStore = ReturnType<typeof controlStore>;
