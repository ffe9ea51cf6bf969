import pg from 'pg';
import type { ResolvedConfig, ResolvedService } from '../../core/config/load.ts';
import { StranglerError } from '../../core/errors.ts';
import type { Logger } from '../../core/logger.ts';
import { copyTables, type BackfillProgress } from './backfill.ts';
import { readSourceTables } from './catalog.ts';
import { copiesPausedIn, pipelineStore, readPipelineState, tablesFedByOwner } from './pipeline-store.ts';
import { generatedKeys, idRangeFindings, readKeyGenerators, readLegacyMax } from './id-ranges.ts';
import { buildSyncPlan, feedsOf, pipelineNames, quoteIdent as q, reverseMapping, targetTableDdl, type Direction, type SyncPlan, type TablePlan } from './plan.ts';

export interface PrepareOptions {
  config: ResolvedConfig;
  service: ResolvedService;
  feedFrom?: ResolvedService;
  direction: Direction;
  sourceUrl: string;
  targetUrl: string;
  logger: Logger;
  onProgress?: (p: BackfillProgress) => void;
  /** An open connection to the source database. */
  source: pg.Client;
  /** Connects to the target once the plan stands (nothing is created before), locks the pipeline, ensures its schema. */
  connectTarget(plan: SyncPlan): Promise<pg.Client>;
  /** Give key generators of the service's tables a range of their own where they would collide with the monolith's (--fix-sequences). */
  fixSequences?: boolean;
}

export interface PreparedPipeline {
  plan: SyncPlan;
  /** Where the stream starts: the end of the last applied commit, or the backfill's consistent point. */
  appliedLsn: string;
  /** How the applier may batch on this target. */
  applier: { checkConflicts: boolean; ownOrigin: number | null; ordered: boolean };
}

/**
 * Everything before the stream: the plan (refused before anything is created), the target's
 * tables, the publication, and the starting point: a full backfill in the slot's exported
 * snapshot (new pipeline, or one whose slot was lost), a slot created now (reverse sync and
 * feeds copy nothing), or the stored applied LSN (with any table added to the mapping since
 * copied in a temporary slot's snapshot).
 */
/** The URLs a pipeline reads from and writes to. */
export function pipelineEnds(config: ResolvedConfig, service: ResolvedService, direction: Direction, feedFrom?: ResolvedService): { sourceUrl: string; targetUrl: string } {
  const legacy = config.legacy.databaseUrl;
  if (direction === 'feed') return { sourceUrl: feedFrom!.databaseUrl, targetUrl: service.databaseUrl };
  return direction === 'reverse' ? { sourceUrl: service.databaseUrl, targetUrl: legacy } : { sourceUrl: legacy, targetUrl: service.databaseUrl };
}

/** A pipeline's plan from its mapping and the source's catalog (refused, with every problem, before anything is created). */
export async function planPipeline(source: pg.Client, o: { config: ResolvedConfig; service: ResolvedService; direction: Direction; feedFrom?: ResolvedService }): Promise<SyncPlan> {
  const { service, direction } = o;
  const owner = o.feedFrom;
  const mapping = { forward: () => service, reverse: () => reverseMapping(service), feed: () => feedsOf([service], owner!)[0]?.mapping ?? { ...service, tables: [] } }[direction]();
  if (mapping.tables.length === 0) {
    throw new StranglerError(direction === 'feed' ? `${service.name} keeps no copies of tables ${owner!.name} owns, so it needs no feed from it` : `${service.name} owns no tables it writes, so it needs no reverse sync`, 'BAD_INPUT');
  }
  const { sourceUrl, targetUrl } = pipelineEnds(o.config, service, direction, owner);
  const catalog = await readSourceTables(source, mapping.tables.map((t) => t.source));
  return buildSyncPlan(mapping, catalog, sourceUrl, direction, targetUrl, owner?.name);
}

export async function preparePipeline(o: PrepareOptions): Promise<PreparedPipeline> {
  const { logger, source } = o;
  const plan = await planPipeline(source, o);
  const target = await o.connectTarget(plan);
  const checkConflicts = (await target.query(`SELECT current_setting('track_commit_timestamp') = 'on' AS on`)).rows[0].on as boolean;
  if (!checkConflicts) logger.warn('track_commit_timestamp is off on the target: writes on both sides of a canary cannot be detected as conflicts');
  // The reverse target is the monolith's own schema: never create tables there.
  const created = new Set<string>();
  if (o.direction !== 'reverse') {
    for (const t of plan.tables) {
      if (!(await target.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [`public.${q(t.target)}`])).rows[0].ok) created.add(t.target);
      await target.query(targetTableDdl(t));
    }
  }
  if (o.direction === 'forward' && !o.service.readOnly) await checkIdRanges(o, source, target, plan, created);

  // Publication: created with every table, or extended with tables added to the mapping later.
  const pub = await source.query(`SELECT array_agg(tablename::text) AS tables FROM pg_publication_tables WHERE pubname = $1`, [plan.publication]);
  const exists = (await source.query(`SELECT 1 FROM pg_publication WHERE pubname = $1`, [plan.publication])).rowCount! > 0;
  const published = new Set<string>(pub.rows[0]?.tables ?? []);
  if (!exists) await source.query(`CREATE PUBLICATION ${q(plan.publication)} FOR TABLE ${plan.tables.map((t) => q(t.source)).join(', ')}`);
  else for (const t of plan.tables) if (!published.has(t.source)) await source.query(`ALTER PUBLICATION ${q(plan.publication)} ADD TABLE ${q(t.source)}`);

  const state = await readPipelineState(target, plan.pipeline);
  const slot = await source.query(`SELECT 1 FROM pg_replication_slots WHERE slot_name = $1`, [plan.slot]);
  const slotExists = slot.rowCount! > 0;
  const fresh = !state || !state.appliedLsn || !slotExists;
  const forwardPipeline = pipelineNames(o.service.name, o.config.legacy.databaseUrl, 'forward').pipeline;
  let appliedLsn: string;
  if (o.direction === 'feed' && fresh && (await copiesPausedIn(target, forwardPipeline, plan.tables.map((t) => t.target))) === true) {
    // A feed started over after its owner's switch (its slot lost): the copies are its own and
    // the forward sync has them paused, so it copies them afresh from the owner, then streams.
    logger.warn({ pipeline: plan.pipeline }, 'feed starts over while it owns the copies: copying them again from the owner');
    appliedLsn = await fullBackfill(o, target, plan, slotExists);
  } else if (o.direction !== 'forward' && fresh) {
    appliedLsn = await startWithoutCopy(o, target, plan, slotExists);
  } else if (fresh || state.status === 'backfilling') {
    appliedLsn = await fullBackfill(o, target, plan, slotExists);
  } else {
    appliedLsn = state.appliedLsn!;
    const copied = new Set(state.tables.map((t) => t.source));
    const added = plan.tables.filter((t) => !copied.has(t.source));
    if (added.length) await tableBackfill(o, target, plan, added);
  }
  return { plan, appliedLsn, applier: { checkConflicts, ownOrigin: await ownOrigin(target, plan.origin), ordered: await keepsOrder(target, plan) } };
}

/** The origin's id, when the server can say which origin committed a row (PostgreSQL 14+). */
async function ownOrigin(target: pg.Client, origin: string): Promise<number | null> {
  const { rows } = await target.query(`SELECT current_setting('server_version_num')::int >= 140000 AS ok, (SELECT roident FROM pg_replication_origin WHERE roname = $1)::int AS id`, [origin]);
  return rows[0].ok && rows[0].id !== null ? rows[0].id : null;
}

/**
 * Whether the order of changes across tables matters on the target: a foreign key between the
 * tables, or a trigger on them, could see a table's changes before or after another's.
 * The toolkit's own service tables have neither; a monolith's usually have foreign keys.
 */
async function keepsOrder(target: pg.Client, plan: SyncPlan): Promise<boolean> {
  const { rows } = await target.query(
    `WITH t AS (SELECT c.oid FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY($1))
     SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'f' AND (conrelid IN (SELECT oid FROM t) OR confrelid IN (SELECT oid FROM t)))
         OR EXISTS (SELECT 1 FROM pg_trigger WHERE NOT tgisinternal AND tgrelid IN (SELECT oid FROM t)) AS ordered`,
    [plan.tables.map((t) => t.target)],
  );
  return rows[0].ordered;
}

/**
 * Reverse sync copies nothing: the monolith already has every row the service has (the
 * forward sync put them there). It starts at the slot's creation, which must come before
 * the first write can reach the service (the control plane checks it runs before canary).
 * A feed starts the same way, paused: the forward sync keeps the copies until a handover.
 */
async function startWithoutCopy(o: PrepareOptions, target: pg.Client, plan: SyncPlan, slotExists: boolean): Promise<string> {
  if (slotExists) await o.source.query(`SELECT pg_drop_replication_slot($1)`, [plan.slot]);
  const { rows } = await o.source.query(`SELECT lsn::text AS lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')`, [plan.slot]);
  const point = rows[0].lsn as string;
  const store = pipelineStore(plan.pipeline);
  await store.startAt(target, plan, point);
  for (const t of plan.tables) await store.tableFrom(target, t, point, plan.direction === 'feed');
  o.logger.info({ slot: plan.slot, point }, `${plan.direction} sync starts`);
  return point;
}

async function fullBackfill(o: PrepareOptions, target: pg.Client, plan: SyncPlan, slotExists: boolean): Promise<string> {
  const { logger } = o;
  const store = pipelineStore(plan.pipeline);
  if (slotExists) await o.source.query(`SELECT pg_drop_replication_slot($1)`, [plan.slot]); // a half-done backfill starts over
  await store.backfilling(target, plan);
  const repl = new pg.Client({ connectionString: o.sourceUrl, replication: 'database' } as pg.ClientConfig);
  await repl.connect();
  try {
    // The exported snapshot stays valid while this connection stays open and idle.
    const { rows } = await repl.query(`CREATE_REPLICATION_SLOT ${q(plan.slot)} LOGICAL pgoutput (SNAPSHOT 'export')`);
    const { consistent_point: point, snapshot_name: snapshot } = rows[0];
    logger.info({ slot: plan.slot, point }, 'slot created; backfilling in its snapshot');
    // Copies a feed keeps now (their owner is switched) are the feed's: a forward sync that
    // starts over must not overwrite them with legacy's rows (stale once finalized).
    const fed = plan.direction === 'forward' ? await tablesFedByOwner(target, o.service.name) : new Set<string>();
    const copied = plan.tables.filter((t) => !fed.has(t.target));
    const total = await copyTables({ sourceUrl: o.sourceUrl, target, snapshot, fromLsn: point, store, tables: copied, onProgress: o.onProgress });
    for (const t of plan.tables.filter((x) => fed.has(x.target))) {
      await store.tableFrom(target, t, point, true);
      logger.info({ pipeline: plan.pipeline, table: t.target }, 'left to its feed (the owner is switched): not copied, paused');
    }
    await store.backfilled(target, point, total);
    return point;
  } finally {
    await repl.end().catch(() => undefined);
  }
}

/**
 * A table added to the mapping later, or re-copied after a schema change: copied in a temporary
 * slot's snapshot; the stream skips its changes up to that point.
 */
export async function tableBackfill(o: Pick<PrepareOptions, 'sourceUrl' | 'logger' | 'onProgress'>, target: pg.Client, plan: SyncPlan, tables: TablePlan[], alignTypes = false): Promise<void> {
  const repl = new pg.Client({ connectionString: o.sourceUrl, replication: 'database' } as pg.ClientConfig);
  await repl.connect();
  try {
    const temp = `${plan.slot}_add_${process.pid}`.slice(0, 63);
    const { rows } = await repl.query(`CREATE_REPLICATION_SLOT ${q(temp)} TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')`);
    await copyTables({ sourceUrl: o.sourceUrl, target, snapshot: rows[0].snapshot_name, fromLsn: rows[0].consistent_point, store: pipelineStore(plan.pipeline), tables, onProgress: o.onProgress, alignTypes });
    o.logger.info({ tables: tables.map((t) => t.source), point: rows[0].consistent_point }, 'added tables backfilled');
  } finally {
    await repl.end().catch(() => undefined); // drops the temporary slot
  }
}

/**
 * The service's key generators against the monolith's ids (id-ranges.ts). Tables the toolkit
 * has just created get a sequence in the service's range; others that could hand out an id the
 * monolith may also use are refused, with the statements, unless fixSequences; a table with no
 * generator at all is only warned about here (the service may not take writes yet: the canary
 * preflight refuses it).
 */
async function checkIdRanges(o: PrepareOptions, source: pg.Client, target: pg.Client, plan: SyncPlan, created: ReadonlySet<string>): Promise<void> {
  const keys = generatedKeys(plan.tables);
  if (keys.length === 0) return;
  const start = BigInt(o.config.sync.idRangeStart ?? 1_000_000_001);
  const findings = idRangeFindings(await readKeyGenerators(target, keys), await readLegacyMax(source, keys, start), start, (t) => plan.tables.find((x) => x.target === t)?.source ?? t);
  const bad = findings.filter((f) => !f.ok);
  const fixable = bad.filter((f) => f.fix.length && (created.has(f.table) || o.fixSequences));
  for (const f of fixable) {
    for (const sql of f.fix) await target.query(sql);
    o.logger.info({ table: f.table, statements: f.fix }, `${f.table}: ids of rows the service creates now start in its own range (from ${start})`);
  }
  const left = bad.filter((f) => !fixable.includes(f));
  const refused = left.filter((f) => !f.fix.length || !/has no default/.test(f.detail));
  if (refused.length) {
    throw new StranglerError(
      `the ids of ${o.service.name}'s database could collide with the monolith's; nothing was started:\n  ${refused.map((f) => `${f.detail}${f.fix.length ? `\n    run: ${f.fix.join(' ')}` : ''}`).join('\n  ')}\n  or let strangler do it: strangler sync start ${o.service.name} --fix-sequences`,
      'CHECK_FAILED',
    );
  }
  for (const f of left) o.logger.warn({ table: f.table, statements: f.fix }, `${f.detail}; before the service takes writes run: ${f.fix.join(' ')} (or strangler sync start ${o.service.name} --fix-sequences)`);
}
