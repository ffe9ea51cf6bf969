import { hostname } from 'node:os';
import pg from 'pg';
import { LogicalReplicationService, PgoutputPlugin, type Pgoutput } from 'pg-logical-replication';
import { Counter, Gauge, Registry } from 'prom-client';
import type { ResolvedConfig, ResolvedService } from '../../core/config/load.ts';
import { StranglerError } from '../../core/errors.ts';
import type { Logger } from '../../core/logger.ts';
import { copyRows, deleteManyStatement, insertManyStatement, insertStatement, isComplete, sameShape, updateStatement, type Statement, type Tuple } from './apply.ts';
import { from as copyFrom } from 'pg-copy-streams';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { copyTables, type BackfillProgress } from './backfill.ts';
import { readSourceTables } from './catalog.ts';
import { compareLsn, lsnDistance } from './lsn.ts';
import { buildSyncPlan, feedsOf, originOf, pipelineNames, quoteIdent as q, reverseMapping, targetTableDdl, type Direction, type SyncPlan, type TablePlan } from './plan.ts';
import { ensureStateSchema, readPipelineState } from './state.ts';

export const HEARTBEAT_PREFIX = 'strangler_heartbeat';
/** Logical message moving a service's copies of an owner's tables between legacy and the owner (handover.ts). */
export const HANDOVER_PREFIX = 'strangler_handover';

export interface HandoverMessage {
  /** The service keeping the copies. */
  service: string;
  /** The service owning the tables. */
  owner: string;
  /** Which source feeds the copies from this message on. */
  to: 'owner' | 'legacy';
}

/**
 * pgoutput with values kept as PostgreSQL's text: the library would otherwise parse them with
 * pg's global type parsers (timestamptz → Date loses microseconds; numeric, arrays and jsonb
 * would change form). The relation message is patched as it is parsed, before any row of it.
 */
class RawTextPgoutput extends PgoutputPlugin {
  override parse(buffer: Buffer): Pgoutput.Message {
    const message = super.parse(buffer);
    if (message.tag === 'relation') for (const column of message.columns) (column as { parser: (v: string) => unknown }).parser = (v: string) => v;
    return message;
  }
}

export type WorkerState = 'created' | 'active' | 'stopping' | 'stopped';

interface TxState {
  skip: boolean;
  rows: number;
  heartbeat: string | null;
  handover: HandoverMessage | null;
  open: boolean;
  commitLsn: string;
  /** The source commit time, microseconds since 1970 (the applied rows carry it, for conflict checks). */
  commitTimeUs: bigint;
}

export interface SyncWorkerOptions {
  config: ResolvedConfig;
  service: ResolvedService;
  logger: Logger;
  heartbeatIntervalMs?: number;
  onProgress?: (p: BackfillProgress) => void;
  /** Wait for a running worker of the same pipeline to go away instead of refusing. */
  waitForLock?: boolean;
  /** forward: legacy → service (backfilled); reverse: service → legacy (from the moment it starts); feed: needs feedFrom. */
  direction?: Direction;
  /** The feed's source: the service owning the tables `service` keeps copies of. */
  feedFrom?: ResolvedService;
}

function lockKey(pipeline: string): string {
  return `strangler_sync:${pipeline}`;
}

/**
 * The forward sync of one service: publication and slot on the legacy database, a backfill in
 * the slot's exported snapshot, then streaming apply. Each source transaction is applied as one
 * target transaction that also stores its commit LSN; the slot is acknowledged only up to what
 * is committed on the target, so a crash anywhere resends, and the stored LSN skips what was
 * already applied: nothing lost, nothing applied twice.
 */
export class SyncWorker {
  #state: WorkerState = 'created';
  readonly #o: SyncWorkerOptions;
  readonly #sourceUrl: string;
  readonly #targetUrl: string;
  readonly #direction: Direction;
  #plan: SyncPlan | null = null;
  #target: pg.Client | null = null;
  #source: pg.Client | null = null;
  #service: LogicalReplicationService | null = null;
  #timers: NodeJS.Timeout[] = [];
  #applied = '0/0';
  #fromLsn = new Map<string, string>();
  /** Tables whose changes another pipeline applies now (source names). */
  #paused = new Set<string>();
  #byRelation = new Map<string, TablePlan>();
  #tx: TxState | null = null;
  /**
   * Runs of inserts or deletes per table, each sent as one statement. A table's run is flushed
   * before any other kind of change to it; every run before an UPDATE, a TRUNCATE or the commit,
   * in the order the tables first appeared (parents before children, as the source wrote them).
   */
  #batches = new Map<TablePlan, { kind: 'insert' | 'delete'; rows: Tuple[] }>();
  /** Conflict checks need commit timestamps on the target (track_commit_timestamp = on). */
  #checkConflicts = false;
  #chain: Promise<void> = Promise.resolve();
  #restarting: Promise<void> | null = null;
  #reconnectDelay = 200;
  readonly metrics = new Registry();
  readonly #rows: Counter;
  readonly #txs: Counter;
  readonly #errors: Counter;
  readonly #lagBytes: Gauge;
  lastError: Error | null = null;

  constructor(options: SyncWorkerOptions) {
    this.#o = options;
    this.#direction = options.feedFrom ? 'feed' : (options.direction ?? 'forward');
    if (this.#direction === 'feed' && !options.feedFrom) throw new Error('a feed needs feedFrom');
    const legacy = options.config.legacy.databaseUrl;
    this.#sourceUrl = { forward: legacy, reverse: options.service.databaseUrl, feed: options.feedFrom?.databaseUrl ?? '' }[this.#direction];
    this.#targetUrl = this.#direction === 'reverse' ? legacy : options.service.databaseUrl;
    const labels = { service: options.service.name };
    this.#rows = new Counter({ name: 'strangler_sync_rows_applied_total', help: 'Row changes applied to the service database', labelNames: ['service'], registers: [this.metrics] });
    this.#txs = new Counter({ name: 'strangler_sync_transactions_applied_total', help: 'Source transactions applied', labelNames: ['service'], registers: [this.metrics] });
    this.#errors = new Counter({ name: 'strangler_sync_errors_total', help: 'Errors in the sync loop (each followed by a reconnect)', labelNames: ['service'], registers: [this.metrics] });
    this.#lagBytes = new Gauge({ name: 'strangler_sync_lag_bytes', help: 'WAL between the legacy head and the applied LSN', labelNames: ['service'], registers: [this.metrics] });
    this.#rows.inc(labels, 0);
    this.#txs.inc(labels, 0);
  }

  get state(): WorkerState {
    return this.#state;
  }

  get appliedLsn(): string {
    return this.#applied;
  }

  get plan(): SyncPlan | null {
    return this.#plan;
  }

  /** Plans (refusing before anything is created), backfills if needed, then streams. Safe to call twice. */
  async start(): Promise<void> {
    if (this.#state !== 'created') return;
    this.#state = 'active';
    try {
      await this.#prepare();
      await this.#stream();
      this.#timers.push(setInterval(() => void this.#heartbeat(), this.#o.heartbeatIntervalMs ?? 500));
      this.#timers.push(setInterval(() => void this.#housekeeping(), 1_000));
      for (const t of this.#timers) t.unref();
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  async #prepare(): Promise<void> {
    const { service, logger } = this.#o;
    const source = new pg.Client({ connectionString: this.#sourceUrl });
    await source.connect();
    source.on('error', (err) => logger.warn({ err }, 'legacy connection lost'));
    this.#source = source;
    const owner = this.#o.feedFrom;
    const mapping = { forward: () => service, reverse: () => reverseMapping(service), feed: () => feedsOf([service], owner!)[0]?.mapping ?? { ...service, tables: [] } }[this.#direction]();
    if (mapping.tables.length === 0) {
      throw new StranglerError(this.#direction === 'feed' ? `${service.name} keeps no copies of tables ${owner!.name} owns, so it needs no feed from it` : `${service.name} owns no tables it writes, so it needs no reverse sync`, 'BAD_INPUT');
    }
    const catalog = await readSourceTables(source, mapping.tables.map((t) => t.source));
    const plan = buildSyncPlan(mapping, catalog, this.#sourceUrl, this.#direction, this.#targetUrl, owner?.name); // throws before anything is created
    this.#plan = plan;
    for (const t of plan.tables) this.#byRelation.set(t.source, t);

    const target = new pg.Client({ connectionString: this.#targetUrl });
    await target.connect();
    target.on('error', (err) => logger.warn({ err }, 'service database connection lost'));
    this.#target = target;
    await this.#lock(target, plan.pipeline);
    await ensureStateSchema(target);
    await this.#markOrigin(target);
    this.#checkConflicts = (await target.query(`SELECT current_setting('track_commit_timestamp') = 'on' AS on`)).rows[0].on;
    if (!this.#checkConflicts) this.#o.logger.warn('track_commit_timestamp is off on the target: writes on both sides of a canary cannot be detected as conflicts');
    // The reverse target is the monolith's own schema: never create tables there.
    if (this.#direction !== 'reverse') for (const t of plan.tables) await target.query(targetTableDdl(t));

    // Publication: created with every table, or extended with tables added to the mapping later.
    const pub = await source.query(`SELECT array_agg(tablename::text) AS tables FROM pg_publication_tables WHERE pubname = $1`, [plan.publication]);
    const exists = (await source.query(`SELECT 1 FROM pg_publication WHERE pubname = $1`, [plan.publication])).rowCount! > 0;
    const published = new Set<string>(pub.rows[0]?.tables ?? []);
    if (!exists) await source.query(`CREATE PUBLICATION ${q(plan.publication)} FOR TABLE ${plan.tables.map((t) => q(t.source)).join(', ')}`);
    else for (const t of plan.tables) if (!published.has(t.source)) await source.query(`ALTER PUBLICATION ${q(plan.publication)} ADD TABLE ${q(t.source)}`);

    const state = await readPipelineState(target, plan.pipeline);
    const slot = await source.query(`SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = $1`, [plan.slot]);
    const fresh = !state || !state.appliedLsn || slot.rowCount === 0;
    if (this.#direction === 'feed' && fresh && (await this.#pausedIn(target, this.#forwardPipeline(), plan.tables.map((t) => t.target))) === true) {
      // A feed started over after its owner's switch (its slot lost): the copies are its own and
      // the forward sync has them paused, so it copies them afresh from the owner, then streams.
      logger.warn({ pipeline: plan.pipeline }, 'feed starts over while it owns the copies: copying them again from the owner');
      await this.#fullBackfill(source, target, plan, slot.rowCount! > 0);
    } else if (this.#direction !== 'forward' && fresh) {
      await this.#startReverse(source, target, plan, slot.rowCount! > 0);
    } else if (!state || state.status === 'backfilling' || !state.appliedLsn || slot.rowCount === 0) {
      await this.#fullBackfill(source, target, plan, slot.rowCount! > 0);
    } else {
      this.#applied = state.appliedLsn;
      const copied = new Set(state.tables.map((t) => t.source));
      const added = plan.tables.filter((t) => !copied.has(t.source));
      if (added.length) await this.#tableBackfill(target, plan, added);
    }
    const tables = await target.query(`SELECT source, from_lsn::text AS from_lsn FROM strangler_sync.tables WHERE pipeline = $1`, [plan.pipeline]);
    for (const r of tables.rows) this.#fromLsn.set(r.source, r.from_lsn);
    await this.#loadPaused(target);
    await target.query(`UPDATE strangler_sync.pipelines SET status = 'streaming', desired = 'running', worker = $2, updated_at = now() WHERE pipeline = $1`, [plan.pipeline, `${hostname()}:${process.pid}`]);
    logger.info({ pipeline: plan.pipeline, slot: plan.slot, appliedLsn: this.#applied }, 'sync prepared; streaming');
  }

  async #lock(target: pg.Client, pipeline: string): Promise<void> {
    // One active worker per pipeline: a session advisory lock on the target, held while streaming.
    for (;;) {
      const { rows } = await target.query(`SELECT pg_try_advisory_lock(hashtext($1)) AS ok`, [lockKey(pipeline)]);
      if (rows[0].ok) return;
      if (!this.#o.waitForLock) {
        const holder = await target.query(`SELECT worker FROM strangler_sync.pipelines WHERE pipeline = $1`, [pipeline]).catch(() => ({ rows: [] as Array<{ worker: string }> }));
        throw new StranglerError(`another sync worker already runs pipeline ${pipeline}${holder.rows[0]?.worker ? ` (${holder.rows[0].worker})` : ''}; stop it first with: strangler sync stop ${this.#o.service.name}`, 'CONFLICT');
      }
      await new Promise((r) => setTimeout(r, 500));
      if (this.#state !== 'active') throw new StranglerError('stopped while waiting for the pipeline lock', 'CONFLICT');
    }
  }

  /**
   * Marks every transaction this worker applies with its replication origin, so the decoder of
   * the other direction skips it: a change never echoes back.
   */
  async #markOrigin(target: pg.Client): Promise<void> {
    const origin = this.#plan!.origin;
    await target.query(`SELECT pg_replication_origin_create($1) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)`, [origin]);
    await target.query(`SELECT pg_replication_origin_session_setup($1)`, [origin]);
  }

  async #loadPaused(target: pg.Client): Promise<void> {
    const { rows } = await target.query(`SELECT source FROM strangler_sync.tables WHERE pipeline = $1 AND paused`, [this.#plan!.pipeline]);
    this.#paused = new Set(rows.map((r) => r.source as string));
  }

  /**
   * Reverse sync copies nothing: the monolith already has every row the service has (the
   * forward sync put them there). It starts at the slot's creation, which must come before
   * the first write can reach the service (the control plane checks it runs before canary).
   * A feed starts the same way, paused: the forward sync keeps the copies until a handover.
   */
  async #startReverse(source: pg.Client, target: pg.Client, plan: SyncPlan, slotExists: boolean): Promise<void> {
    if (slotExists) await source.query(`SELECT pg_drop_replication_slot($1)`, [plan.slot]);
    const { rows } = await source.query(`SELECT lsn::text AS lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')`, [plan.slot]);
    const point = rows[0].lsn as string;
    await target.query(
      `INSERT INTO strangler_sync.pipelines (pipeline, slot, publication, status, applied_lsn) VALUES ($1, $2, $3, 'streaming', $4)
       ON CONFLICT (pipeline) DO UPDATE SET status = 'streaming', applied_lsn = excluded.applied_lsn, updated_at = now()`,
      [plan.pipeline, plan.slot, plan.publication, point],
    );
    for (const t of plan.tables) {
      await target.query(
        `INSERT INTO strangler_sync.tables (pipeline, source, target, from_lsn, rows_copied, paused) VALUES ($1, $2, $3, $4, 0, $5)
         ON CONFLICT (pipeline, source) DO UPDATE SET from_lsn = excluded.from_lsn, paused = excluded.paused, handover_lsn = NULL`,
        [plan.pipeline, t.source, t.target, point, plan.direction === 'feed'],
      );
    }
    this.#applied = point;
    this.#o.logger.info({ slot: plan.slot, point }, `${plan.direction} sync starts`);
  }

  /** Whether another pipeline of this database has the copies paused: null when it has none of them. */
  async #pausedIn(target: pg.Client, pipeline: string, copies: string[]): Promise<boolean | null> {
    const { rows } = await target.query(`SELECT count(*)::int AS n, count(*) FILTER (WHERE paused)::int AS paused FROM strangler_sync.tables WHERE pipeline = $1 AND target = ANY($2)`, [pipeline, copies]);
    return rows[0].n === 0 ? null : rows[0].paused === rows[0].n;
  }

  /** The forward pipeline of this service (legacy → its database), whose copies a feed takes over. */
  #forwardPipeline(): string {
    return pipelineNames(this.#o.service.name, this.#o.config.legacy.databaseUrl, 'forward').pipeline;
  }

  /** Target tables a feed applies to now (a feed pipeline of this database has them unpaused). */
  async #fedByOwner(target: pg.Client): Promise<Set<string>> {
    const { rows } = await target.query(`SELECT target FROM strangler_sync.tables WHERE pipeline LIKE $1 AND NOT paused`, [`${this.#o.service.name}:feed:%`]);
    return new Set(rows.map((r) => r.target as string));
  }

  async #fullBackfill(source: pg.Client, target: pg.Client, plan: SyncPlan, slotExists: boolean): Promise<void> {
    const { logger } = this.#o;
    if (slotExists) await source.query(`SELECT pg_drop_replication_slot($1)`, [plan.slot]); // a half-done backfill starts over
    await target.query(
      `INSERT INTO strangler_sync.pipelines (pipeline, slot, publication, status) VALUES ($1, $2, $3, 'backfilling')
       ON CONFLICT (pipeline) DO UPDATE SET status = 'backfilling', applied_lsn = NULL, updated_at = now()`,
      [plan.pipeline, plan.slot, plan.publication],
    );
    await target.query(`DELETE FROM strangler_sync.tables WHERE pipeline = $1`, [plan.pipeline]);
    const repl = new pg.Client({ connectionString: this.#sourceUrl, replication: 'database' } as pg.ClientConfig);
    await repl.connect();
    try {
      // The exported snapshot stays valid while this connection stays open and idle.
      const { rows } = await repl.query(`CREATE_REPLICATION_SLOT ${q(plan.slot)} LOGICAL pgoutput (SNAPSHOT 'export')`);
      const { consistent_point: point, snapshot_name: snapshot } = rows[0];
      logger.info({ slot: plan.slot, point }, 'slot created; backfilling in its snapshot');
      // Copies a feed keeps now (their owner is switched) are the feed's: a forward sync that
      // starts over must not overwrite them with legacy's rows (stale once finalized).
      const fed = plan.direction === 'forward' ? await this.#fedByOwner(target) : new Set<string>();
      const copied = plan.tables.filter((t) => !fed.has(t.target));
      const total = await copyTables({ sourceUrl: this.#sourceUrl, target, snapshot, fromLsn: point, pipeline: plan.pipeline, tables: copied, onProgress: this.#o.onProgress });
      for (const t of plan.tables.filter((x) => fed.has(x.target))) {
        await target.query(`INSERT INTO strangler_sync.tables (pipeline, source, target, from_lsn, rows_copied, paused) VALUES ($1, $2, $3, $4, 0, true)`, [plan.pipeline, t.source, t.target, point]);
        logger.info({ pipeline: plan.pipeline, table: t.target }, 'left to its feed (the owner is switched): not copied, paused');
      }
      await target.query(
        `UPDATE strangler_sync.pipelines SET status = 'streaming', applied_lsn = $2, backfill_lsn = $2, backfilled_at = now(), backfill_rows = $3, updated_at = now() WHERE pipeline = $1`,
        [plan.pipeline, point, total],
      );
      this.#applied = point;
    } finally {
      await repl.end().catch(() => undefined);
    }
  }

  /** A table added to the mapping later: copied in a temporary slot's snapshot; the stream skips its changes up to that point. */
  async #tableBackfill(target: pg.Client, plan: SyncPlan, tables: TablePlan[]): Promise<void> {
    const repl = new pg.Client({ connectionString: this.#sourceUrl, replication: 'database' } as pg.ClientConfig);
    await repl.connect();
    try {
      const temp = `${plan.slot}_add_${process.pid}`.slice(0, 63);
      const { rows } = await repl.query(`CREATE_REPLICATION_SLOT ${q(temp)} TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')`);
      await copyTables({ sourceUrl: this.#sourceUrl, target, snapshot: rows[0].snapshot_name, fromLsn: rows[0].consistent_point, pipeline: plan.pipeline, tables, onProgress: this.#o.onProgress });
      this.#o.logger.info({ tables: tables.map((t) => t.source), point: rows[0].consistent_point }, 'added tables backfilled');
    } finally {
      await repl.end().catch(() => undefined); // drops the temporary slot
    }
  }

  async #stream(): Promise<void> {
    const plan = this.#plan!;
    const service = new LogicalReplicationService(
      { connectionString: this.#sourceUrl },
      // Acknowledge nothing by itself: its auto-acknowledge and its 10 s timer both report the
      // last *received* LSN, ahead of what is applied. We acknowledge after each target commit.
      { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: true } },
    );
    this.#service = service;
    service.on('data', (lsn: string, message: Pgoutput.Message) => this.#enqueue(() => this.#apply(lsn, message)));
    service.on('heartbeat', (_lsn: string, _ts: number, shouldRespond: boolean) => {
      if (shouldRespond) void service.acknowledge(this.#applied).catch(() => undefined);
    });
    service.on('error', (err: Error) => this.#fail(err, 'replication stream'));
    const plugin = new RawTextPgoutput({ protoVersion: 1, publicationNames: [plan.publication], messages: true });
    service.subscribe(plugin, plan.slot, this.#applied).catch((err) => this.#fail(err, 'replication stream'));
    this.#tx = null;
  }

  /** flowControl awaits each handler; the chain keeps the order even if it did not. */
  #enqueue(fn: () => Promise<void>): Promise<void> {
    const next = this.#chain.then(fn).catch((err) => this.#fail(err, 'apply'));
    this.#chain = next;
    return next;
  }

  async #apply(_lsn: string, m: Pgoutput.Message): Promise<void> {
    if (this.#state !== 'active' || this.#restarting) return;
    const target = this.#target!;
    switch (m.tag) {
      case 'begin': {
        const skip = compareLsn(m.commitLsn!, this.#applied) < 0;
        this.#tx = { skip, rows: 0, heartbeat: null, handover: null, open: false, commitLsn: m.commitLsn!, commitTimeUs: BigInt(m.commitTime as unknown as bigint) };
        this.#batches.clear();
        return;
      }
      case 'insert':
      case 'update':
      case 'delete':
      case 'truncate':
        return this.#change(target, m);
      case 'origin':
        // Applied by this service's other direction: never send it back. Rows another
        // pipeline applied (the reverse sync of invoices, seen by analytics' replica) still flow.
        // The paired direction writes into this worker's source database.
        // A feed skips nothing: its target never writes the copies.
        if (this.#tx && this.#direction !== 'feed' && m.originName === originOf(this.#o.service.name, this.#direction === 'forward' ? 'reverse' : 'forward', this.#sourceUrl)) this.#tx.skip = true;
        return;
      case 'message':
        if (!this.#tx || this.#tx.skip) return;
        if (m.prefix === HEARTBEAT_PREFIX) this.#tx.heartbeat = Buffer.from(m.content).toString('utf8');
        if (m.prefix === HANDOVER_PREFIX) {
          const h = JSON.parse(Buffer.from(m.content).toString('utf8')) as HandoverMessage;
          if (h.service === this.#o.service.name && (this.#direction === 'forward' || h.owner === this.#plan!.owner)) this.#tx.handover = h;
        }
        return;
      case 'commit': {
        const tx = this.#tx;
        this.#tx = null;
        if (!tx || tx.skip) return;
        // Before its transaction opens: the wait must hold no lock the other pipeline may need.
        if (tx.handover && !tx.open) await this.#afterCounterpartPauses(target, tx.handover);
        await this.#flush(target, tx);
        await this.#begin(target, tx);
        const paused = tx.handover ? await this.#handover(target, tx.handover, m.commitEndLsn!) : null;
        await target.query(
          `UPDATE strangler_sync.pipelines SET applied_lsn = $2, applied_at = now(), source_commit_at = $3, rows_applied = rows_applied + $4,
                  transactions_applied = transactions_applied + 1, heartbeat_source_at = coalesce($5::timestamptz, heartbeat_source_at), updated_at = now()
            WHERE pipeline = $1`,
          [this.#plan!.pipeline, m.commitEndLsn, m.commitTime ? new Date(Number(m.commitTime as unknown as bigint) / 1000) : null, tx.rows, tx.heartbeat],
        );
        await target.query('COMMIT');
        this.#applied = m.commitEndLsn!;
        if (paused) this.#paused = paused;
        this.#rows.inc({ service: this.#o.service.name }, tx.rows);
        this.#txs.inc({ service: this.#o.service.name });
        this.#reconnectDelay = 200;
        // Durable on the target: now, and only now, the slot may forget it.
        await this.#service?.acknowledge(this.#applied);
        return;
      }
      default:
        return;
    }
  }

  /**
   * A handover message, in stream order: from its LSN on, the copies of the owner's tables come
   * from `to`. The forward pipeline pauses them when they go to the owner and resumes them when
   * they come back; the feed does the opposite. Recorded in the transaction that applies it.
   */
  async #handover(target: pg.Client, h: HandoverMessage, lsn: string): Promise<Set<string>> {
    const plan = this.#plan!;
    const { tables, pause } = this.#handoverScope(h);
    const next = new Set(this.#paused);
    for (const t of tables) {
      if (pause) next.add(t.source);
      else next.delete(t.source);
    }
    if (tables.length) {
      await target.query(`UPDATE strangler_sync.tables SET paused = $3, handover_lsn = $4 WHERE pipeline = $1 AND source = ANY($2)`, [plan.pipeline, tables.map((t) => t.source), pause, lsn]);
      this.#o.logger.info({ pipeline: plan.pipeline, tables: tables.map((t) => t.source), paused: pause, lsn }, `copies of ${h.owner}'s tables now come from ${h.to === 'owner' ? h.owner : 'legacy'}`);
    }
    return next;
  }

  /** The copies a handover message moves in this pipeline, and whether it pauses or resumes them. */
  #handoverScope(h: HandoverMessage): { tables: TablePlan[]; pause: boolean } {
    const plan = this.#plan!;
    const owner = this.#o.config.services.find((s) => s.name === h.owner);
    const tables = plan.direction === 'feed' ? plan.tables : owner ? plan.tables.filter((t) => owner.tables.some((o) => !o.replica && o.source === t.source)) : [];
    return { tables, pause: plan.direction === 'feed' ? h.to === 'legacy' : h.to === 'owner' };
  }

  /**
   * The pipeline taking the copies over resumes only once the one giving them up has paused at
   * its own message: until then that one may still apply older changes of the same rows, which
   * would land after this one's newer ones. So the order holds without the switchover holding
   * writes until both have applied their messages. Waits outside any target transaction (the
   * other pipeline may need its locks, to start); a stop aborts it, and the message is applied
   * again at the restart.
   */
  async #afterCounterpartPauses(target: pg.Client, h: HandoverMessage): Promise<void> {
    const owner = this.#o.config.services.find((s) => s.name === h.owner);
    const { tables, pause } = this.#handoverScope(h);
    if (!owner || pause || tables.length === 0) return;
    const copies = tables.map((t) => t.target);
    const counterpart = this.#direction === 'feed' ? this.#forwardPipeline() : pipelineNames(this.#o.service.name, owner.databaseUrl, 'feed', this.#targetUrl, owner.name).pipeline;
    const started = Date.now();
    let warned = false;
    for (;;) {
      // null: no such pipeline, nothing else writes these copies, nothing to wait for.
      if ((await this.#pausedIn(target, counterpart, copies)) !== false) return;
      if (this.#state !== 'active' || this.#restarting) throw new StranglerError(`stopped while ${this.#plan!.pipeline} waited for ${counterpart} to reach its handover`, 'NOT_READY');
      if (!warned && Date.now() - started > 5_000) {
        warned = true;
        this.#o.logger.warn({ pipeline: this.#plan!.pipeline, waitingFor: counterpart, copies }, `the copies wait for ${counterpart} to reach its handover message before ${this.#plan!.pipeline} applies to them (is it running? strangler sync status ${this.#o.service.name})`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /**
   * Opens the target transaction with the source's commit LSN and time as its origin data, so
   * the rows it writes carry the source commit time (track_commit_timestamp): the conflict
   * check compares it with a later local write.
   */
  async #begin(target: pg.Client, tx: TxState): Promise<void> {
    if (tx.open) return;
    await target.query('BEGIN');
    tx.open = true;
    await target.query(`SELECT pg_replication_origin_xact_setup($1, to_timestamp($2::float8 / 1000000))`, [tx.commitLsn, tx.commitTimeUs.toString()]);
  }

  async #run(target: pg.Client, tx: TxState, st: Statement): Promise<pg.QueryResult> {
    await this.#begin(target, tx);
    return target.query(st.sql, st.params);
  }

  /**
   * Conflicts: target rows written after the source change was committed (a write on the other
   * side within the lag). Rule: the later commit wins, so those changes are skipped and
   * recorded (strangler status shows the count). Returns the keys that may be applied.
   * One query for a whole run of keys.
   */
  async #conflicts(target: pg.Client, tx: TxState, table: TablePlan, keys: Tuple[], kind: 'update' | 'delete'): Promise<Tuple[]> {
    if (!this.#checkConflicts || keys.length === 0) return keys;
    const keyCols = table.key.map((k) => q(table.columns.find((c) => c.source === k)!.target));
    const params: Array<string | null> = [tx.commitTimeUs.toString()];
    const tuples = keys.map((key) => `(${table.key.map((k) => (params.push(key[k] as string | null), `$${params.length}`)).join(', ')})`);
    // The rows are locked first (FOR UPDATE), then their commit time read: a local write still
    // in progress is waited for and seen, instead of being overwritten once it commits.
    const r = await this.#run(target, tx, {
      sql: `WITH locked AS (SELECT ${keyCols.map((c, i) => `${c} AS __c${i}`).join(', ')}, xmin AS __x FROM ${q(table.target)} WHERE (${keyCols.join(', ')}) IN (${tuples.join(', ')}) FOR UPDATE)
            SELECT ${keyCols.map((_, i) => `__c${i}::text AS __k${i}`).join(', ')}, pg_xact_commit_timestamp(__x)::text AS local_at, to_timestamp($1::float8 / 1000000)::text AS source_at
              FROM locked WHERE pg_xact_commit_timestamp(__x) > to_timestamp($1::float8 / 1000000)`,
      params,
    });
    if (r.rows.length === 0) return keys;
    const later = new Set(r.rows.map((row) => table.key.map((_, i) => row[`__k${i}`]).join('\u0000')));
    for (const row of r.rows) {
      const key = Object.fromEntries(table.key.map((k, i) => [k, row[`__k${i}`]]));
      await this.#run(target, tx, {
        sql: `INSERT INTO strangler_sync.conflicts (pipeline, table_name, key, kind, source_commit_at, target_commit_at, resolution) VALUES ($1, $2, $3, $4, $5, $6, 'kept the target row: its write is later')`,
        params: [this.#plan!.pipeline, table.target, JSON.stringify(key), kind, row.source_at, row.local_at],
      });
      this.#o.logger.warn({ pipeline: this.#plan!.pipeline, table: table.target, key, kind }, 'conflict: the target row was written later; kept it');
    }
    return keys.filter((key) => !later.has(table.key.map((k) => String(key[k])).join('\u0000')));
  }

  async #flush(target: pg.Client, tx: TxState, only?: TablePlan): Promise<void> {
    for (const [table, batch] of [...this.#batches]) {
      if (only && table !== only) continue;
      this.#batches.delete(table);
      if (batch.kind === 'insert' && batch.rows.length >= 50) {
        // Large runs go through COPY. No conflict is possible: transactions at or below the
        // applied LSN are skipped, and an interrupted one was rolled back with its LSN.
        await this.#begin(target, tx);
        const { sql, data } = copyRows(table, batch.rows);
        await pipeline(Readable.from([data]), target.query(copyFrom(sql)));
        continue;
      }
      if (batch.kind === 'delete') {
        const keep = await this.#conflicts(target, tx, table, batch.rows, 'delete');
        if (keep.length) await this.#run(target, tx, deleteManyStatement(table, keep));
        continue;
      }
      await this.#run(target, tx, insertManyStatement(table, batch.rows));
    }
  }

  async #change(target: pg.Client, m: Pgoutput.MessageInsert | Pgoutput.MessageUpdate | Pgoutput.MessageDelete | Pgoutput.MessageTruncate): Promise<void> {
    const tx = this.#tx;
    if (!tx || tx.skip) return;
    if (m.tag === 'truncate') {
      await this.#flush(target, tx);
      for (const rel of m.relations) {
        const table = this.#byRelation.get(rel.name);
        if (table && !this.#paused.has(table.source)) await this.#run(target, tx, { sql: `TRUNCATE ${q(table.target)}`, params: [] });
      }
      return;
    }
    const table = this.#byRelation.get(m.relation.name);
    if (!table || m.relation.schema !== 'public') return;
    // Another pipeline feeds this copy now (handover): its changes here are that pipeline's.
    if (this.#paused.has(table.source)) return;
    const from = this.#fromLsn.get(table.source);
    // A table copied later than the slot's start: its changes up to the copy's snapshot are in the copy.
    if (from && compareLsn(tx.commitLsn, from) < 0) return;
    tx.rows++;
    if (m.tag === 'insert' || m.tag === 'delete') {
      const row = (m.tag === 'insert' ? m.new : (m.key ?? m.old)) as Tuple;
      const b = this.#batches.get(table);
      if (b && (b.kind !== m.tag || b.rows.length >= (m.tag === 'insert' ? 5000 : 500) || !sameShape(b.rows[0], row))) await this.#flush(target, tx, table);
      const current = this.#batches.get(table);
      if (current) current.rows.push(row);
      else this.#batches.set(table, { kind: m.tag, rows: [row] });
      return;
    }
    await this.#flush(target, tx);
    if ((await this.#conflicts(target, tx, table, [((m.key ?? m.old) as Tuple | null) ?? (m.new as Tuple)], 'update')).length === 0) return;
    const result = await this.#run(target, tx, updateStatement(table, (m.key ?? m.old) as Tuple | null, m.new as Tuple));
    if (result.rowCount === 0) {
      if (!isComplete(table, m.new as Tuple)) throw new Error(`row of "${table.target}" to update is missing and the change does not carry every column (unchanged TOAST); run: strangler sync verify ${this.#o.service.name}`);
      await this.#run(target, tx, insertStatement(table, m.new as Tuple));
    }
  }

  /** Any error in the loop: roll back the open transaction, record it, reconnect from the applied LSN. */
  #fail(err: unknown, where: string): void {
    const error = err instanceof Error ? err : new Error(String(err));
    if (this.#state !== 'active') return;
    this.lastError = error;
    this.#errors.inc({ service: this.#o.service.name });
    this.#o.logger.error({ err: error, where, slot: this.#plan?.slot, appliedLsn: this.#applied }, 'sync error; reconnecting from the applied LSN');
    this.#restarting ??= this.#restart(error).finally(() => {
      this.#restarting = null;
    });
  }

  async #restart(error: Error): Promise<void> {
    const service = this.#service;
    this.#service = null;
    await service?.destroy().catch(() => undefined);
    await this.#chain.catch(() => undefined);
    this.#tx = null;
    this.#batches.clear();
    while (this.#state === 'active') {
      await new Promise((r) => setTimeout(r, this.#reconnectDelay));
      this.#reconnectDelay = Math.min(this.#reconnectDelay * 2, 5_000);
      try {
        await this.#target?.query('ROLLBACK').catch(() => undefined);
        if (!this.#target || !(await this.#alive(this.#target))) {
          await this.#target?.end().catch(() => undefined);
          const target = new pg.Client({ connectionString: this.#targetUrl });
          await target.connect();
          target.on('error', () => undefined);
          this.#target = target;
          await this.#lock(target, this.#plan!.pipeline);
          await this.#markOrigin(target);
        }
        if (!this.#source || !(await this.#alive(this.#source))) {
          await this.#source?.end().catch(() => undefined);
          const source = new pg.Client({ connectionString: this.#sourceUrl });
          await source.connect();
          source.on('error', () => undefined);
          this.#source = source;
        }
        const state = await readPipelineState(this.#target, this.#plan!.pipeline);
        if (state?.appliedLsn) this.#applied = state.appliedLsn;
        await this.#loadPaused(this.#target);
        await this.#target.query(`UPDATE strangler_sync.pipelines SET last_error = $2, last_error_at = now() WHERE pipeline = $1`, [this.#plan!.pipeline, error.message]);
        if (this.#state !== 'active') return;
        await this.#stream();
        this.#o.logger.info({ appliedLsn: this.#applied }, 'sync reconnected');
        return;
      } catch (err) {
        this.#o.logger.warn({ err }, 'sync reconnect failed; retrying');
      }
    }
  }

  async #alive(client: pg.Client): Promise<boolean> {
    try {
      await client.query('SELECT 1');
      return true;
    } catch {
      return false;
    }
  }

  /** A transactional logical message every interval: the lag in seconds is measured with it. */
  async #heartbeat(): Promise<void> {
    if (this.#state !== 'active' || this.#restarting) return;
    try {
      await this.#source?.query(`SELECT pg_logical_emit_message(true, $1, clock_timestamp()::text)`, [HEARTBEAT_PREFIX]);
    } catch {
      // the reconnect path deals with a lost connection
    }
  }

  async #housekeeping(): Promise<void> {
    if (this.#state !== 'active' || this.#restarting) return;
    try {
      const lsn = await this.#source?.query(`SELECT pg_current_wal_lsn()::text AS lsn`);
      if (lsn) this.#lagBytes.set({ service: this.#o.service.name }, lsnDistance(this.#applied, lsn.rows[0].lsn));
      const desired = await this.#target?.query(`SELECT desired FROM strangler_sync.pipelines WHERE pipeline = $1`, [this.#plan!.pipeline]);
      if (desired?.rows[0]?.desired === 'stopped') {
        this.#o.logger.info('stop requested through the control row; stopping');
        void this.stop();
      }
    } catch {
      // transient; the stream's own error path reconnects
    }
  }

  /** Stops streaming, rolls back an unfinished transaction (it will be resent), releases the lock. Safe to call twice. */
  async stop(): Promise<void> {
    if (this.#state === 'stopped' || this.#state === 'stopping') return;
    if (this.#state === 'created') {
      this.#state = 'stopped';
      return;
    }
    this.#state = 'stopping';
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    await this.#service?.destroy().catch(() => undefined);
    await this.#chain.catch(() => undefined);
    await this.#restarting?.catch(() => undefined);
    const target = this.#target;
    if (target) {
      await target.query('ROLLBACK').catch(() => undefined);
      if (this.#plan) await target.query(`UPDATE strangler_sync.pipelines SET status = 'stopped', worker = NULL, updated_at = now() WHERE pipeline = $1 AND status = 'streaming'`, [this.#plan.pipeline]).catch(() => undefined);
      await target.end().catch(() => undefined);
    }
    await this.#source?.end().catch(() => undefined);
    this.#state = 'stopped';
  }
}
