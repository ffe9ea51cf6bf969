/**
 * Moving a service's read-only copies of another service's tables (analytics' invoices) from
 * legacy to the owner's database, and back.
 *
 * Each copy has two pipelines: the forward sync from legacy and a feed from the owner's
 * database, and exactly one of them applies a table's changes while the other has it paused.
 * The switch is a pair of logical messages, one in each source's WAL: the forward pipeline
 * pauses (or resumes) at its message, the feed resumes (or pauses) at its own, each in the
 * transaction that applies the message. The messages are written while the owner's writes are
 * held and both directions of its sync are drained, so legacy at the first message and the
 * owner at the second hold the same rows: the copy takes every change once, no gap, no double.
 */
import pg from 'pg';
import type { ResolvedConfig, ResolvedService } from '../../core/config/load.ts';
import { lsnDistance } from './lsn.ts';
import { feedsOf, pipelineNames } from './plan.ts';
import { HANDOVER_PREFIX, type HandoverMessage } from './messages.ts';

export interface HandoverOutcome {
  service: string;
  tables: string[];
  /** Time until the forward pipeline had applied its message; null when it had not within the wait. */
  ms: number | null;
}

export interface FeedState {
  service: string;
  tables: string[];
  /** The feed's pipeline exists (its slot on the owner's database too). */
  exists: boolean;
  /** Which source feeds the copies now, as the feed's own record says. */
  from: 'owner' | 'legacy';
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** A database not created yet holds no pipeline: the same answer as an empty one. */
async function unlessMissing<T>(fn: () => Promise<T>, empty: T): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if ((err as { code?: string }).code === '3D000') return empty;
    throw err;
  }
}

/** Where each copy of the owner's tables comes from now. */
export async function feedStates(config: ResolvedConfig, owner: ResolvedService): Promise<FeedState[]> {
  const states: FeedState[] = [];
  const slots = await unlessMissing(() => withClient(owner.databaseUrl, async (c) => new Set((await c.query(`SELECT slot_name FROM pg_replication_slots`)).rows.map((r) => r.slot_name as string))), new Set<string>());
  for (const { service, mapping } of feedsOf(config.services, owner)) {
    const names = pipelineNames(service.name, owner.databaseUrl, 'feed', service.databaseUrl, owner.name);
    const rows = await unlessMissing(() => withClient(service.databaseUrl, async (c) => {
      const exists = (await c.query(`SELECT to_regclass('strangler_sync.tables') IS NOT NULL AS ok`)).rows[0].ok;
      return exists ? (await c.query(`SELECT paused FROM strangler_sync.tables WHERE pipeline = $1`, [names.pipeline])).rows : [];
    }), []);
    states.push({
      service: service.name,
      tables: mapping.tables.map((t) => t.source),
      exists: rows.length > 0 && slots.has(names.slot),
      from: rows.length > 0 && rows.every((r) => !r.paused) ? 'owner' : 'legacy',
    });
  }
  return states;
}

/** Handover messages written, not yet confirmed applied. */
export interface PendingHandover {
  to: 'owner' | 'legacy';
  owner: string;
  copies: Array<{ state: FeedState; service: ResolvedService; marks: Array<{ pipeline: string; lsn: string }>; started: number }>;
  warnings: string[];
}

/**
 * Writes the handover messages for every copy of the owner's tables whose feed exists. The
 * caller holds the owner's writes and has drained its sync; it may release them at once: the
 * pipeline that takes a copy over waits, in its own stream, for the one giving it up (worker.ts).
 * A copy whose feed does not exist stays on legacy (warned).
 */
export async function emitHandover(config: ResolvedConfig, owner: ResolvedService, to: 'owner' | 'legacy'): Promise<PendingHandover> {
  const pending: PendingHandover = { to, owner: owner.name, copies: [], warnings: [] };
  const states = await feedStates(config, owner);
  if (!states.length) return pending;
  const legacy = new pg.Client({ connectionString: config.legacy.databaseUrl });
  const ownerDb = new pg.Client({ connectionString: owner.databaseUrl });
  await Promise.all([legacy.connect(), ownerDb.connect()]);
  try {
    for (const state of states) {
      if (!state.exists) {
        if (to === 'owner') pending.warnings.push(`${state.service}'s copies of ${state.tables.join(', ')} stay fed from legacy: its feed from ${owner.name} does not run yet (strangler sync start ${state.service} starts it); finalizing ${owner.name} needs it`);
        continue;
      }
      const message: HandoverMessage = { service: state.service, owner: owner.name, to };
      const emit = async (c: pg.Client) => (await c.query(`SELECT pg_logical_emit_message(true, $1, $2)::text AS lsn`, [HANDOVER_PREFIX, JSON.stringify(message)])).rows[0].lsn as string;
      const service = config.services.find((s) => s.name === state.service)!;
      const started = Date.now();
      const [atOwner, atLegacy] = await Promise.all([emit(ownerDb), emit(legacy)]);
      const names = pipelineNames(service.name, owner.databaseUrl, 'feed', service.databaseUrl, owner.name);
      pending.copies.push({
        state,
        service,
        started,
        // Done when both pipelines of the copy are past their message.
        marks: [
          { pipeline: pipelineNames(service.name, config.legacy.databaseUrl, 'forward').pipeline, lsn: atLegacy },
          { pipeline: names.pipeline, lsn: atOwner },
        ],
      });
    }
    return pending;
  } finally {
    await Promise.all([legacy.end().catch(() => undefined), ownerDb.end().catch(() => undefined)]);
  }
}

/** Waits (up to `waitMs`) until both pipelines of each copy have applied their handover message. */
export async function confirmHandover(pending: PendingHandover, waitMs: number): Promise<{ moved: HandoverOutcome[]; warnings: string[] }> {
  const moved: HandoverOutcome[] = [];
  const warnings = [...pending.warnings];
  const deadline = Date.now() + waitMs;
  for (const p of pending.copies) {
    const done = await withClient(p.service.databaseUrl, async (c) => {
      for (;;) {
        const { rows } = await c.query(`SELECT pipeline, applied_lsn::text AS lsn FROM strangler_sync.pipelines WHERE pipeline = ANY($1)`, [p.marks.map((m) => m.pipeline)]);
        const applied = new Map(rows.map((r) => [r.pipeline as string, r.lsn as string | null]));
        if (p.marks.every((m) => applied.get(m.pipeline) && lsnDistance(applied.get(m.pipeline)!, m.lsn) === 0)) return true;
        if (Date.now() > deadline) return false;
        await new Promise((r) => setTimeout(r, 5));
      }
    });
    moved.push({ service: p.state.service, tables: p.state.tables, ms: done ? Date.now() - p.started : null });
    if (!done) warnings.push(`${p.state.service} has not applied the handover of ${p.state.tables.join(', ')} to ${pending.to === 'owner' ? pending.owner : 'legacy'} yet; it takes effect when its sync catches up (strangler sync status ${p.state.service})`);
  }
  return { moved, warnings };
}
