import { hostname } from 'node:os';
import pg from 'pg';
import type { Pgoutput } from './pgoutput.ts';
import { Counter, Gauge, Registry } from 'prom-client';
import type { ResolvedConfig, ResolvedService, ResolvedTableMapping } from '../../core/config/load.ts';
import { databaseName, ensureDatabase, isMissingDatabase } from '../../core/databases.ts';
import { StranglerError } from '../../core/errors.ts';
import type { Logger } from '../../core/logger.ts';
import type { Tuple } from './apply.ts';
import { TransactionApplier, type SourceTx } from './applier.ts';
import { DEFAULT_SYNC_DEADLINES, syncClient, type SyncDeadlines } from './connect.ts';
import type { BackfillProgress } from './backfill.ts';
import { compareLsn, lsnDistance } from './lsn.ts';
import { HANDOVER_PREFIX, HEARTBEAT_PREFIX, type HandoverMessage } from './messages.ts';
import { copiesPausedIn, ensureStateSchema, pipelineStore, readPipelineState, shapeOf, type PipelineStore, type ResumeRequest } from './pipeline-store.ts';
import { originOf, pipelineNames, quoteIdent, type Direction, type SyncPlan, type TablePlan } from './plan.ts';
import { ReplicationStream, type StreamItem } from './replication-stream.ts';
import { decideShape, type RelationColumn, type SchemaChange, type ShapeColumn } from './schema-change.ts';
import { pipelineEnds, planPipeline, preparePipeline, tableBackfill } from './setup.ts';

export { HANDOVER_PREFIX, HEARTBEAT_PREFIX, type HandoverMessage } from './messages.ts';

export type WorkerState = 'created' | 'active' | 'stopping' | 'stopped';

/**
 * A group of source transactions is committed on the target once it reaches the first limits, or when the stream goes quiet for
 * idleMs; while the group before it is still committing it keeps collecting, up to the max
 * limits: the group grows to what the target takes in one commit's time (group commit), so a
 * busy target pays its round trips per group, not per source transaction.
 */
const GROUP_LIMITS = { transactions: 2_000, rows: 20_000, ms: 100, idleMs: 3 };
const GROUP_MAX = { transactions: 20_000, rows: 100_000, ms: 1_000 };

interface TxState extends SourceTx {
  skip: boolean;
  /** Row changes of this transaction applied so far. */
  rows: number;
  heartbeat: string | null;
  handover: HandoverMessage | null;
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
  /** Give the service's key generators a range of their own where they could collide with the monolith's. */
  fixSequences?: boolean;
}

function lockKey(pipeline: string): string {
  return `strangler_sync:${pipeline}`;
}

/** A group whose batched statements failed: its transactions are sent again and applied one by one. */
class ReplayStrictly extends Error {
  /** Strict up to the transaction whose commit starts here (default: every transaction received). */
  constructor(
    message: string,
    readonly until?: string,
  ) {
    super(message);
  }
}

/** The pipeline stopped at a schema change (recorded): the stream is closed until a resume. */
class SchemaStop extends Error {}

/**
 * One pipeline: publication and slot on the source, a backfill in the slot's exported
 * snapshot when needed (setup.ts), then streaming apply (applier.ts). Groups of source
 * transactions are applied as one target transaction that also stores the end LSN of its last
 * commit; the slot is acknowledged exactly up to that LSN once it is committed, so a crash
 * anywhere resends from there: nothing lost, nothing applied twice.
 */
export class SyncWorker {
  #state: WorkerState = 'created';
  readonly #o: SyncWorkerOptions;
  readonly #sourceUrl: string;
  readonly #targetUrl: string;
  readonly #direction: Direction;
  #plan: SyncPlan | null = null;
  #store: PipelineStore | null = null;
  #target: pg.Client | null = null;
  #source: pg.Client | null = null;
  #stream: ReplicationStream | null = null;
  #loop: Promise<void> | null = null;
  #applier: TransactionApplier | null = null;
  #timers: NodeJS.Timeout[] = [];
  #applied = '0/0';
  /** Replay one transaction at a time until the applied LSN reaches this (after a failed group). */
  #strictUntil: string | null = null;
  /** The end of the last commit received (how far a failed group reached). */
  #received = '0/0';
  #fromLsn = new Map<string, string>();
  /** Tables whose changes another pipeline applies now (source names). */
  #paused = new Set<string>();
  #byRelation = new Map<string, TablePlan>();
  #tx: TxState | null = null;
  #applierOptions: { checkConflicts: boolean; ownOrigin: number | null; ordered: boolean } = { checkConflicts: false, ownOrigin: null, ordered: true };
  #restarting: Promise<void> | null = null;
  #reconnectDelay = 200;
  /** A heartbeat is in flight on the source connection. */
  #beating = false;
  /** The housekeeping's own connection to the target ('busy' while it asks). */
  #housekeeper: pg.Client | null | 'busy' = null;
  /** The shape each table is applied in (source name), as of the applied LSN. */
  #shapes = new Map<string, ShapeColumn[]>();
  /** Type names by OID and modifier (relation messages carry only OIDs). */
  #typeNames = new Map<string, string>();
  /** Stopped at a schema change: since when (a resume asked for later continues). */
  #schemaStop: { reason: string; lsn: string; at: Date } | null = null;
  /** The service as this worker applies it (a resume replaces its table mapping). */
  #service: ResolvedService;
  readonly #deadlines: SyncDeadlines;
  /** A verify's hold (pipeline-store.ts): pause where the worker is, then run up to `at` and stand there. */
  #hold: { phase: 'pause' } | { phase: 'run'; at: string } | null = null;
  readonly metrics = new Registry();
  readonly #rows: Counter;
  readonly #txs: Counter;
  readonly #groups: Counter;
  readonly #errors: Counter;
  readonly #lagBytes: Gauge;
  lastError: Error | null = null;

  constructor(options: SyncWorkerOptions) {
    this.#o = options;
    this.#service = options.service;
    const sync = options.config.sync;
    this.#deadlines = { connectTimeoutMs: sync.connectTimeoutMs ?? DEFAULT_SYNC_DEADLINES.connectTimeoutMs, queryTimeoutMs: sync.queryTimeoutMs ?? DEFAULT_SYNC_DEADLINES.queryTimeoutMs, receiveTimeoutMs: sync.receiveTimeoutMs ?? DEFAULT_SYNC_DEADLINES.receiveTimeoutMs };
    this.#direction = options.feedFrom ? 'feed' : (options.direction ?? 'forward');
    if (this.#direction === 'feed' && !options.feedFrom) throw new Error('a feed needs feedFrom');
    ({ sourceUrl: this.#sourceUrl, targetUrl: this.#targetUrl } = pipelineEnds(options.config, options.service, this.#direction, options.feedFrom));
    const labels = { service: options.service.name };
    this.#rows = new Counter({ name: 'strangler_sync_rows_applied_total', help: 'Row changes applied to the service database', labelNames: ['service'], registers: [this.metrics] });
    this.#txs = new Counter({ name: 'strangler_sync_transactions_applied_total', help: 'Source transactions applied', labelNames: ['service'], registers: [this.metrics] });
    this.#groups = new Counter({ name: 'strangler_sync_target_commits_total', help: 'Target transactions committed (each applies a group of source transactions)', labelNames: ['service'], registers: [this.metrics] });
    this.#errors = new Counter({ name: 'strangler_sync_errors_total', help: 'Errors in the sync loop (each followed by a reconnect)', labelNames: ['service'], registers: [this.metrics] });
    this.#lagBytes = new Gauge({ name: 'strangler_sync_lag_bytes', help: 'WAL between the legacy head and the applied LSN', labelNames: ['service'], registers: [this.metrics] });
    this.#rows.inc(labels, 0);
    // A series from the start (at 0), so that a dashboard's rate of errors reads 0, not "no data".
    this.#errors.inc(labels, 0);
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
      await this.#startStream();
      this.#timers.push(setInterval(() => void this.#heartbeat(), this.#o.heartbeatIntervalMs ?? 500));
      this.#timers.push(setInterval(() => void this.#housekeeping(), 1_000));
      for (const t of this.#timers) t.unref();
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  async #prepare(): Promise<void> {
    const { logger } = this.#o;
    const source = syncClient(this.#sourceUrl, this.#deadlines);
    try {
      await source.connect();
    } catch (err) {
      if (!isMissingDatabase(err)) throw err;
      throw new StranglerError(
        this.#direction === 'forward'
          ? `the legacy database "${databaseName(this.#sourceUrl)}" does not exist; check legacy.database in strangler.yaml`
          : `the ${this.#direction === 'reverse' ? `service database of ${this.#o.service.name}` : `database of ${this.#o.feedFrom!.name}`} ("${databaseName(this.#sourceUrl)}") does not exist yet: start its forward sync first (strangler sync start ${this.#direction === 'reverse' ? this.#o.service.name : this.#o.feedFrom!.name})`,
        'NOT_READY',
      );
    }
    source.on('error', (err) => logger.warn({ err }, 'source connection lost'));
    this.#source = source;
    // The service's own database is the toolkit's to create (never the monolith's).
    if (this.#direction !== 'reverse' && (await ensureDatabase(this.#targetUrl, `the database of ${this.#o.service.name}`))) {
      logger.info({ database: databaseName(this.#targetUrl) }, `created the database of ${this.#o.service.name}`);
    }
    const target = syncClient(this.#targetUrl, this.#deadlines);
    const prepared = await preparePipeline({
      ...this.#o,
      direction: this.#direction,
      sourceUrl: this.#sourceUrl,
      targetUrl: this.#targetUrl,
      source,
      connectTarget: async (plan) => {
        await target.connect();
        target.on('error', (err) => logger.warn({ err }, 'target connection lost'));
        this.#target = target;
        this.#plan = plan;
        await this.#lock(target, plan.pipeline);
        await ensureStateSchema(target);
        await this.#markOrigin(target);
        return target;
      },
    });
    const plan = prepared.plan;
    this.#store = pipelineStore(plan.pipeline);
    this.#applied = prepared.appliedLsn;
    this.#applierOptions = prepared.applier;
    for (const t of plan.tables) this.#byRelation.set(t.source, t);
    this.#shapes = await this.#store.shapes(target);
    this.#fromLsn = await this.#store.fromLsns(target);
    this.#paused = await this.#store.paused(target);
    await this.#store.streaming(target, `${hostname()}:${process.pid}`);
    logger.info({ pipeline: plan.pipeline, slot: plan.slot, appliedLsn: this.#applied, ...prepared.applier }, 'sync prepared; streaming');
  }

  async #lock(target: pg.Client, pipeline: string): Promise<void> {
    // One active worker per pipeline: a session advisory lock on the target, held while streaming.
    for (;;) {
      const { rows } = await target.query(`SELECT pg_try_advisory_lock(hashtext($1)) AS ok`, [lockKey(pipeline)]);
      if (rows[0].ok) return;
      if (!this.#o.waitForLock) {
        const holder = await pipelineStore(pipeline).worker(target).catch(() => null);
        throw new StranglerError(`another sync worker already runs pipeline ${pipeline}${holder ? ` (${holder})` : ''}; stop it first with: strangler sync stop ${this.#o.service.name}`, 'CONFLICT');
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

  async #startStream(): Promise<void> {
    const plan = this.#plan!;
    const stream = new ReplicationStream({ url: this.#sourceUrl, slot: plan.slot, publication: plan.publication, startLsn: this.#applied, connectTimeoutMs: this.#deadlines.connectTimeoutMs, receiveTimeoutMs: this.#deadlines.receiveTimeoutMs });
    this.#stream = stream;
    this.#applier = new TransactionApplier({ target: this.#target!, store: this.#store!, logger: this.#o.logger, pipeline: plan.pipeline, ...this.#applierOptions });
    this.#tx = null;
    try {
      await stream.start();
    } catch (err) {
      await stream.close();
      throw err;
    }
    this.#loop = this.#consume(stream, this.#applier);
  }

  /** Applies what the stream delivers, in order, until it ends; an error starts a reconnect. */
  async #consume(stream: ReplicationStream, applier: TransactionApplier): Promise<void> {
    try {
      let waiting: Promise<StreamItem | null> | null = null;
      for (;;) {
        if (this.#hold?.phase === 'pause' && !this.#tx) {
          // A verify asked to stand: commit what is collected (under steady writes a group is
          // always collecting, so waiting for an empty one could wait for ever), then, with the
          // group behind committed too, stand here.
          await this.#commitNow(applier);
          await this.#pauseForHold();
        }
        // Under load the next message is already buffered: taken, and (most changes) handled,
        // without a promise; only what must wait on the target or the network awaits.
        let item: StreamItem | null | undefined = waiting ? undefined : stream.take();
        if (item === undefined) {
          const next: Promise<StreamItem | null> = waiting ?? stream.next();
          waiting = null;
          if (!this.#tx && applier.hasPending) {
            // A group is open and nothing is buffered: commit it unless more arrives very soon
            // (under load it does, and the group grows; when the source goes quiet, the lag
            // stays within GROUP_IDLE_MS).
            const first = await Promise.race([next, new Promise<'idle'>((r) => setTimeout(() => r('idle'), GROUP_LIMITS.idleMs))]);
            if (first === 'idle') {
              // While the group before is still committing, this one goes on collecting: it is
              // committed once that one is done, or grows meanwhile.
              if (applier.committing) await Promise.race([next, applier.behindDone()]);
              else await applier.commitBehind((done) => this.#committed(done));
              waiting = next;
              continue;
            }
          }
          item = await next;
        }
        if (!item || this.#state !== 'active') break;
        const handled = item.tag === 'keepalive' ? this.#keepalive(item.lsn, stream, applier) : this.#handle(item, stream, applier);
        if (handled) await handled;
      }
      if (this.#state === 'active' && stream.error) throw stream.error;
    } catch (err) {
      if (stream !== this.#stream || this.#state !== 'active') return;
      await applier.rollback();
      if (err instanceof SchemaStop) {
        // Recorded: nothing past the change is applied or acknowledged; a resume restarts here.
        this.#stream = null;
        await stream.close();
        return;
      }
      if (err instanceof ReplayStrictly && err.until) {
        this.#strictUntil = err.until;
        this.#fail(err, 'apply', 0);
        return;
      }
      if (!(err instanceof ReplayStrictly) && !applier.strict && err instanceof Error && !isConnectionError(err)) {
        // A batched statement failed where applying one transaction at a time may not: replay
        // what the failed group held strictly before counting it as an error.
        this.#strictUntil = this.#received;
        this.#o.logger.warn({ err, pipeline: this.#plan!.pipeline, from: this.#applied, until: this.#received }, 'a group of transactions failed to apply in batches; applying them one at a time');
        this.#fail(new ReplayStrictly(err.message), 'apply', 0);
        return;
      }
      this.#fail(err, err === stream.error ? 'replication stream' : 'apply');
    }
  }

  /**
   * The server has sent everything up to `lsn`: when nothing received is left to apply, the
   * slot may forget everything up to there (this pipeline has nothing in it).
   */
  #keepalive(lsn: string, stream: ReplicationStream, applier: TransactionApplier): Promise<void> | undefined {
    if (this.#tx || applier.hasPending || stream.hasBuffered) return undefined;
    return this.#acknowledgeAt(lsn, stream, applier);
  }

  async #acknowledgeAt(lsn: string, stream: ReplicationStream, applier: TransactionApplier): Promise<void> {
    // Not past a group still committing: only once it is.
    await applier.settle();
    stream.acknowledge(lsn);
    // Nothing more to apply before a hold's point: stand there.
    if (this.#hold?.phase === 'run' && compareLsn(lsn, this.#hold.at) >= 0) await this.#standAt(this.#hold.at);
  }

  /**
   * A verify asked for a hold: stop here (everything received so far is applied and
   * committed), say so, and wait to learn the point to stop at (or for the hold to end).
   */
  async #pauseForHold(): Promise<void> {
    const target = this.#target!;
    await this.#store!.held(target, this.#applied);
    for (;;) {
      const h = await this.#store!.hold(target);
      if (!h.active || this.#state !== 'active') {
        this.#hold = null;
        return;
      }
      // Released and asked for again between two looks (the next verify, at once): stand here for it too.
      if (!h.held && !h.at) await this.#store!.held(target, this.#applied);
      if (h.at) {
        this.#hold = { phase: 'run', at: h.at };
        this.#o.logger.info({ pipeline: this.#plan!.pipeline, at: h.at }, 'holding for a verify: applying up to its point');
        return;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Stands at `lsn` (all before applied, nothing after) until the verify releases the hold or its lease ends. */
  async #standAt(lsn: string): Promise<void> {
    const target = this.#target!;
    await this.#store!.held(target, lsn);
    for (;;) {
      const h = this.#state === 'active' ? await this.#store!.hold(target) : null;
      if (!h?.active) break;
      if (!h.held) {
        // Released and asked for again between two looks (the next verify, at once): a new
        // hold, which starts with a pause. Everything up to here is committed: pause here.
        this.#hold = { phase: 'pause' };
        this.#o.logger.info({ pipeline: this.#plan!.pipeline, at: lsn }, 'hold released; the next verify holds');
        return;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    this.#hold = null;
    this.#o.logger.info({ pipeline: this.#plan!.pipeline, at: lsn }, 'hold released');
  }

  /** One message; a promise only when it has to wait (the target, a hold, a group's commit). */
  #handle(m: Pgoutput.Message, stream: ReplicationStream, applier: TransactionApplier): Promise<void> | undefined {
    switch (m.tag) {
      case 'begin':
        // The first commit at or past a verify's point: everything before it goes in, then wait.
        if (this.#hold?.phase === 'run' && compareLsn(m.commitLsn!, this.#hold.at) >= 0) return this.#beginAfterHold(applier, m, this.#hold.at);
        this.#begin(applier, m);
        return undefined;
      case 'insert':
      case 'update':
      case 'delete':
        return this.#change(applier, m);
      case 'relation':
        return this.#relationSettled(applier, m);
      case 'truncate':
        return this.#truncate(applier, m);
      case 'origin':
        // Applied by this service's other direction: never send it back. Rows another
        // pipeline applied (the reverse sync of invoices, seen by analytics' replica) still flow.
        // A feed skips nothing: its target never writes the copies.
        if (this.#tx && this.#direction !== 'feed' && m.originName === originOf(this.#o.service.name, this.#direction === 'forward' ? 'reverse' : 'forward', this.#sourceUrl)) this.#tx.skip = true;
        return undefined;
      case 'message':
        return this.#message(applier, m);
      case 'commit':
        return this.#commit(applier, m);
      default:
        return undefined;
    }
  }

  async #beginAfterHold(applier: TransactionApplier, m: Pgoutput.MessageBegin, at: string): Promise<void> {
    await this.#commitNow(applier);
    await this.#standAt(at);
    this.#begin(applier, m);
  }

  #begin(applier: TransactionApplier, m: Pgoutput.MessageBegin): void {
    const commitLsn = m.commitLsn!;
    applier.strict = this.#strictUntil !== null && compareLsn(commitLsn, this.#strictUntil) <= 0;
    if (this.#strictUntil !== null && !applier.strict) this.#strictUntil = null;
    const skip = compareLsn(commitLsn, this.#applied) < 0;
    this.#tx = { skip, rows: 0, heartbeat: null, handover: null, commitLsn, commitTimeUs: m.commitTime };
  }

  async #relationSettled(applier: TransactionApplier, m: Pgoutput.MessageRelation): Promise<void> {
    // Reads and writes the target directly: never inside the transaction of a group committing behind.
    await applier.settle();
    return this.#relation(applier, m);
  }

  async #truncate(applier: TransactionApplier, m: Pgoutput.MessageTruncate): Promise<void> {
    await applier.settle();
    const tx = this.#tx;
    if (!tx || tx.skip) return;
    const tables = m.relations.map((rel) => this.#byRelation.get(rel.name)).filter((t): t is TablePlan => t !== undefined && !this.#paused.has(t.source));
    const refused = tables.filter((t) => t.rules.truncate === 'stop');
    if (refused.length) {
      const names = refused.map((t) => t.source).join(', ');
      await this.#stopAtSchemaChange(applier, refused[0].source, `TRUNCATE of ${names} on the source, and the policy for truncates is stop; to carry it over set truncate: apply for the table in strangler.yaml (or sync.schemaChanges.truncate) and run: strangler sync resume ${this.#service.name}${this.#direction === 'reverse' ? ' --reverse' : ''}`, refused.map((t) => ({ kind: 'type-changed', column: '*', detail: 'TRUNCATE', action: 'stopped' }) as SchemaChange));
    }
    if (tables.length) await applier.truncate(tables);
  }

  /**
   * A relation message: a table's shape at this point of the stream (sent before its first
   * change in a session, and again after it changed). Compared with the shape applied so far:
   * a change the policy allows is applied in the group's transaction, before the rows written
   * in the new shape (the target's table altered if need be, the new shape stored with the
   * rows); one it does not stops the pipeline before this transaction.
   */
  async #relation(applier: TransactionApplier, m: Pgoutput.MessageRelation): Promise<void> {
    const base = this.#byRelation.get(m.name);
    if (!base || m.schema !== 'public' || !this.#tx) return;
    const target = this.#target!;
    const columns = await this.#resolveTypes(target, m.columns);
    const previous = this.#shapes.get(base.source) ?? shapeOf(base);
    const targetTypes = new Map<string, string>(
      (await target.query(`SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`, [`public.${quoteIdent(base.target)}`])).rows.map((r) => [r.attname, r.type]),
    );
    const d = decideShape(base.source, previous, columns, base.rules, targetTypes, this.#direction !== 'reverse', this.#service.name);
    if (d.stop) return this.#stopAtSchemaChange(applier, base.source, d.stop, d.changes.filter((c) => c.action === 'stopped'));
    const key = m.keyColumns.length ? m.keyColumns : base.key;
    const next: TablePlan = {
      ...base,
      key,
      columns: d.shape.filter((c) => c.status === 'mapped').map((c) => ({ source: c.source, target: c.target, type: c.type, notNull: base.columns.find((b) => b.target === c.target)?.notNull ?? false })),
    };
    const same = d.changes.length === 0 && JSON.stringify(previous) === JSON.stringify(d.shape);
    if (!same) {
      // Rows of the old shape first; then the target's table, the record, the new shape.
      await applier.flushTable(base);
      const tx = this.#tx;
      const defaults = d.actions.some((a) => a.kind === 'add-column') ? await this.#sourceDefaults(base.source) : new Map<string, string>();
      await applier.inTransaction(async (c) => {
        for (const a of d.actions) {
          // An added column takes the source's default, so the rows not written since hold what the source's hold.
          const source = d.shape.find((x) => x.target === a.target)?.source ?? a.target;
          const fill = defaults.has(source) ? ` DEFAULT ${defaults.get(source)}` : '';
          await c.query(a.kind === 'add-column' ? `ALTER TABLE ${quoteIdent(base.target)} ADD COLUMN IF NOT EXISTS ${quoteIdent(a.target)} ${a.type}${fill}` : `ALTER TABLE ${quoteIdent(base.target)} ALTER COLUMN ${quoteIdent(a.target)} TYPE ${a.type}`);
        }
        await this.#store!.shapeChanged(c, base.source, base.target, d.shape, tx.commitLsn, d.changes);
      });
      for (const c of d.changes) this.#o.logger.warn({ pipeline: this.#plan!.pipeline, table: base.source, column: c.column, change: c.kind, detail: c.detail, action: c.action, lsn: tx.commitLsn }, `schema change on ${base.source}: ${c.kind} ${c.column} (${c.detail}): ${c.action}`);
    }
    this.#shapes.set(base.source, d.shape);
    this.#byRelation.set(m.name, next);
  }

  /** The source table's column defaults (expressions), read now on a connection of its own (rare: a column added). */
  async #sourceDefaults(table: string): Promise<Map<string, string>> {
    const c = syncClient(this.#sourceUrl, this.#deadlines);
    await c.connect();
    try {
      const { rows } = await c.query(`SELECT a.attname, pg_get_expr(d.adbin, d.adrelid) AS expr FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum WHERE d.adrelid = to_regclass($1)`, [`public.${quoteIdent(table)}`]);
      return new Map(rows.map((r) => [r.attname as string, r.expr as string]));
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  /** Type names for a relation's columns: built-in types by the target's format_type, others as the message names them. */
  async #resolveTypes(target: pg.Client, columns: Pgoutput.RelationColumn[]): Promise<RelationColumn[]> {
    const out: RelationColumn[] = [];
    for (const c of columns) {
      // OIDs below 16384 are built in, the same on every server.
      if (c.typeOid >= 16384) {
        out.push({ name: c.name, type: c.typeName ? `${c.typeSchema ? `${c.typeSchema}.` : ''}${c.typeName}` : `oid ${c.typeOid}`, userDefined: true });
        continue;
      }
      const k = `${c.typeOid}:${c.typeMod}`;
      let name = this.#typeNames.get(k);
      if (!name) {
        name = (await target.query(`SELECT format_type($1, $2) AS t`, [c.typeOid, c.typeMod])).rows[0].t as string;
        this.#typeNames.set(k, name);
      }
      out.push({ name: c.name, type: name, userDefined: false });
    }
    return out;
  }

  /**
   * Stops before the current transaction: everything before it is applied and acknowledged,
   * nothing of it or after. Recorded with the reason and the fix (strangler sync status shows
   * it; the cutover checks fail on it); the stream stays closed until a resume or a restart.
   */
  async #stopAtSchemaChange(applier: TransactionApplier, table: string, reason: string, changes: SchemaChange[]): Promise<never> {
    const tx = this.#tx!;
    if (applier.pending.lsn || applier.open || tx.rows > 0) {
      // Transactions before this one wait in the open group (or this one has begun): replay
      // them one at a time, so this one alone is left out.
      if (!applier.strict) throw new ReplayStrictly('a schema change to stop at', tx.commitLsn);
      await applier.rollback();
    }
    this.#schemaStop = { reason, lsn: tx.commitLsn, at: new Date() };
    await this.#store!.schemaStopped(this.#target!, reason, tx.commitLsn, table, changes);
    this.#o.logger.error({ pipeline: this.#plan!.pipeline, table, lsn: tx.commitLsn, appliedLsn: this.#applied }, `sync stopped at a schema change: ${reason}`);
    throw new SchemaStop(reason);
  }

  /**
   * Takes the mapping a resume sends (strangler.yaml as the CLI read it), copies again the
   * tables it names (in a snapshot, their target columns typed as the source's now; their
   * changes before the snapshot are then skipped) and restarts the stream at the stop.
   */
  async #resume(request: ResumeRequest): Promise<void> {
    const service = { ...this.#service, tables: request.tables as ResolvedTableMapping[] };
    const source = syncClient(this.#sourceUrl, this.#deadlines);
    await source.connect();
    let plan: SyncPlan;
    try {
      plan = await planPipeline(source, { config: this.#o.config, service, direction: this.#direction, feedFrom: this.#o.feedFrom });
    } finally {
      await source.end().catch(() => undefined);
    }
    this.#service = service;
    this.#plan = plan;
    this.#byRelation = new Map(plan.tables.map((t) => [t.source, t]));
    const recopy = plan.tables.filter((t) => request.recopy.includes(t.source));
    if (recopy.length) {
      this.#o.logger.info({ pipeline: plan.pipeline, tables: recopy.map((t) => t.source) }, 'copying tables again before resuming');
      await tableBackfill({ sourceUrl: this.#sourceUrl, logger: this.#o.logger, onProgress: this.#o.onProgress }, this.#target!, plan, recopy, true);
      this.#fromLsn = await this.#store!.fromLsns(this.#target!);
      this.#shapes = await this.#store!.shapes(this.#target!);
    }
    await this.#store!.resumed(this.#target!);
    this.#o.logger.info({ pipeline: plan.pipeline, lsn: this.#schemaStop?.lsn }, 'resuming after the schema change with the mapping sent by strangler sync resume');
    this.#schemaStop = null;
    this.#fail(new ReplayStrictly('resume'), 'resume', 0);
  }

  #change(applier: TransactionApplier, m: Pgoutput.MessageInsert | Pgoutput.MessageUpdate | Pgoutput.MessageDelete): Promise<void> | undefined {
    const tx = this.#tx;
    if (!tx || tx.skip) return undefined;
    const table = this.#byRelation.get(m.relation.name);
    if (!table || m.relation.schema !== 'public') return undefined;
    // Another pipeline feeds this copy now (handover): its changes here are that pipeline's.
    if (this.#paused.has(table.source)) return undefined;
    const from = this.#fromLsn.get(table.source);
    // A table copied later than the slot's start: its changes up to the copy's snapshot are in the copy.
    if (from && compareLsn(tx.commitLsn, from) < 0) return undefined;
    tx.rows++;
    if (m.tag === 'insert') return applier.change(tx, table, 'insert', m.new as Tuple, null);
    if (m.tag === 'delete') return applier.change(tx, table, 'delete', (m.key ?? m.old) as Tuple, null);
    return applier.change(tx, table, 'update', m.new as Tuple, (m.key ?? m.old) as Tuple | null);
  }

  async #message(applier: TransactionApplier, m: Pgoutput.MessageMessage): Promise<void> {
    const tx = this.#tx;
    if (!tx || tx.skip) return;
    if (m.prefix === HEARTBEAT_PREFIX) tx.heartbeat = Buffer.from(m.content).toString('utf8');
    if (m.prefix !== HANDOVER_PREFIX) return;
    const h = JSON.parse(Buffer.from(m.content).toString('utf8')) as HandoverMessage;
    if (h.service !== this.#o.service.name || (this.#direction !== 'forward' && h.owner !== this.#plan!.owner)) return;
    tx.handover = h;
    if (tx.rows > 0 && !applier.strict) throw new ReplayStrictly('a handover message inside a transaction with changes');
    // The transactions before it are committed first: the handover is applied in a target
    // transaction of its own, opened only once the other pipeline has paused (see #commit).
    await this.#commitNow(applier);
  }

  #commit(applier: TransactionApplier, m: Pgoutput.MessageCommit): Promise<void> | undefined {
    const tx = this.#tx;
    this.#tx = null;
    const end = m.commitEndLsn!;
    this.#received = end;
    if (!tx || compareLsn(tx.commitLsn, this.#applied) < 0) return undefined;
    const commitTime = m.commitTime ? new Date(Number(m.commitTime) / 1000) : null;
    if (tx.handover) return this.#commitHandover(applier, tx, tx.handover, end, commitTime);
    applier.endTransaction(tx, end, commitTime, !tx.skip, tx.heartbeat);
    // The group is committed when it is large or old enough (bounded locks, memory and lag),
    // or when the stream goes quiet (#consume).
    if (applier.strict) return this.#commitNow(applier);
    // The next group collects while this one is applied (at most one behind); while the one
    // before is still committing, this one keeps collecting rather than wait for it.
    if (applier.reached(GROUP_LIMITS) && (!applier.committing || applier.reached(GROUP_MAX))) return applier.commitBehind((done) => this.#committed(done));
    return undefined;
  }

  /** Commits the open group (after the one behind it) and records it committed. */
  async #commitNow(applier: TransactionApplier): Promise<void> {
    const done = await applier.commit();
    if (done) this.#committed(done);
  }

  async #commitHandover(applier: TransactionApplier, tx: TxState, handover: HandoverMessage, end: string, commitTime: Date | null): Promise<void> {
    // Before its transaction opens: the wait must hold no lock the other pipeline may need.
    await applier.settle();
    if (!applier.open) await this.#afterCounterpartPauses(this.#target!, handover);
    let paused: Set<string> | null = null;
    applier.endTransaction(tx, end, commitTime, !tx.skip, tx.heartbeat);
    const done = await applier.commit(async (target) => {
      paused = await this.#handover(target, handover, end);
    });
    if (paused) this.#paused = paused;
    if (done) this.#committed(done);
  }

  /** A group is durable on the target: now, and only now, the slot may forget it. */
  #committed(done: { lsn: string; rows: number; transactions: number; hold: boolean }): void {
    this.#applied = done.lsn;
    if (done.hold && !this.#hold) this.#hold = { phase: 'pause' };
    this.#rows.inc({ service: this.#o.service.name }, done.rows);
    this.#txs.inc({ service: this.#o.service.name }, done.transactions);
    this.#groups.inc({ service: this.#o.service.name });
    this.#reconnectDelay = 200;
    this.#stream?.acknowledge(done.lsn);
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
      await this.#store!.setPaused(target, tables.map((t) => t.source), pause, lsn);
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
    const counterpart = this.#direction === 'feed' ? pipelineNames(this.#o.service.name, this.#o.config.legacy.databaseUrl, 'forward').pipeline : pipelineNames(this.#o.service.name, owner.databaseUrl, 'feed', this.#targetUrl, owner.name).pipeline;
    const started = Date.now();
    let warned = false;
    for (;;) {
      // null: no such pipeline, nothing else writes these copies, nothing to wait for.
      if ((await copiesPausedIn(target, counterpart, copies)) !== false) return;
      if (this.#state !== 'active' || this.#restarting) throw new StranglerError(`stopped while ${this.#plan!.pipeline} waited for ${counterpart} to reach its handover`, 'NOT_READY');
      if (!warned && Date.now() - started > 5_000) {
        warned = true;
        this.#o.logger.warn({ pipeline: this.#plan!.pipeline, waitingFor: counterpart, copies }, `the copies wait for ${counterpart} to reach its handover message before ${this.#plan!.pipeline} applies to them (is it running? strangler sync status ${this.#o.service.name})`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Any error in the loop: roll back the open group, record it, reconnect from the applied LSN. */
  #fail(err: unknown, where: string, delayMs?: number): void {
    const error = describeFailure(err, where);
    if (this.#state !== 'active') return;
    if (!(error instanceof ReplayStrictly)) {
      this.lastError = error;
      this.#errors.inc({ service: this.#o.service.name });
      this.#o.logger.error({ err: error, where, slot: this.#plan?.slot, appliedLsn: this.#applied }, 'sync error; reconnecting from the applied LSN');
    }
    if (delayMs !== undefined) this.#reconnectDelay = delayMs;
    this.#restarting ??= this.#restart(error).finally(() => {
      this.#restarting = null;
    });
  }

  async #restart(error: Error): Promise<void> {
    const stream = this.#stream;
    this.#stream = null;
    await stream?.close();
    await this.#loop?.catch(() => undefined);
    await this.#applier?.rollback();
    this.#tx = null;
    while (this.#state === 'active') {
      await new Promise((r) => setTimeout(r, this.#reconnectDelay));
      this.#reconnectDelay = Math.min(Math.max(this.#reconnectDelay, 100) * 2, 5_000);
      try {
        await this.#target?.query('ROLLBACK').catch(() => undefined);
        if (!this.#target || !(await alive(this.#target))) {
          await this.#target?.end().catch(() => undefined);
          const target = syncClient(this.#targetUrl, this.#deadlines);
          await target.connect();
          target.on('error', () => undefined);
          this.#target = target;
          await this.#lock(target, this.#plan!.pipeline);
          await this.#markOrigin(target);
        }
        if (!this.#source || !(await alive(this.#source))) {
          await this.#source?.end().catch(() => undefined);
          const source = syncClient(this.#sourceUrl, this.#deadlines);
          await source.connect();
          source.on('error', () => undefined);
          this.#source = source;
        }
        const state = await readPipelineState(this.#target, this.#plan!.pipeline);
        if (state?.appliedLsn) this.#applied = state.appliedLsn;
        this.#paused = await this.#store!.paused(this.#target);
        if (!(error instanceof ReplayStrictly)) await this.#store!.lastError(this.#target, error.message);
        if (this.#state !== 'active') return;
        await this.#startStream();
        this.#o.logger.info({ appliedLsn: this.#applied }, 'sync reconnected');
        return;
      } catch (err) {
        // Still unreachable: that is the error to report now.
        this.lastError = err instanceof Error ? err : new Error(String(err));
        this.#o.logger.warn({ err }, 'sync reconnect failed; retrying');
      }
    }
  }

  /**
   * A transactional logical message every interval: the lag in seconds is measured with it,
   * and the source's WAL head read with it gives the lag in bytes. One at a time on the
   * source connection (nothing else uses it while streaming).
   */
  async #heartbeat(): Promise<void> {
    if (this.#state !== 'active' || this.#restarting || this.#beating) return;
    this.#beating = true;
    try {
      const { rows } = await this.#source!.query(`SELECT pg_logical_emit_message(true, $1, clock_timestamp()::text), pg_current_wal_lsn()::text AS head`, [HEARTBEAT_PREFIX]);
      this.#lagBytes.set({ service: this.#o.service.name }, lsnDistance(this.#applied, rows[0].head));
    } catch {
      // the reconnect path deals with a lost connection
    } finally {
      this.#beating = false;
    }
  }

  /**
   * Every second: has a stop been asked for through the control row? Read on a connection of
   * its own, never the applier's (its group transactions must stay its own).
   */
  async #housekeeping(): Promise<void> {
    if (this.#state !== 'active' || this.#restarting || this.#housekeeper === 'busy') return;
    const client = this.#housekeeper;
    this.#housekeeper = 'busy';
    let next: pg.Client | null = client;
    try {
      if (!next) {
        next = syncClient(this.#targetUrl, this.#deadlines);
        next.on('error', () => undefined);
        await next.connect();
      }
      if ((await this.#store!.desired(next)) === 'stopped') {
        this.#o.logger.info('stop requested through the control row; stopping');
        void this.stop();
      } else if (this.#schemaStop && !this.#restarting) {
        const mapping = await this.#store!.resumeRequest(next, this.#schemaStop.at);
        if (mapping) await this.#resume(mapping).catch((err) => this.#o.logger.error({ err }, `the resume was refused: ${(err as Error).message}`));
      }
    } catch {
      await next?.end().catch(() => undefined);
      next = null;
    } finally {
      this.#housekeeper = next;
      if (this.#state !== 'active') await next?.end().catch(() => undefined);
    }
  }

  /** Stops streaming, rolls back an unfinished group (it will be resent), releases the lock. Safe to call twice. */
  async stop(): Promise<void> {
    if (this.#state === 'stopped' || this.#state === 'stopping') return;
    if (this.#state === 'created') {
      this.#state = 'stopped';
      return;
    }
    this.#state = 'stopping';
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    const stream = this.#stream;
    this.#stream = null;
    await stream?.close();
    await this.#loop?.catch(() => undefined);
    await this.#restarting?.catch(() => undefined);
    await this.#applier?.rollback();
    const target = this.#target;
    if (target) {
      await target.query('ROLLBACK').catch(() => undefined);
      if (this.#store) await this.#store.stopped(target).catch(() => undefined);
      await target.end().catch(() => undefined);
    }
    await this.#source?.end().catch(() => undefined);
    if (this.#housekeeper && this.#housekeeper !== 'busy') await this.#housekeeper.end().catch(() => undefined);
    this.#housekeeper = null;
    this.#state = 'stopped';
  }
}

async function alive(client: pg.Client): Promise<boolean> {
  try {
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  }
}

/**
 * The error a failure is recorded as (`sync status`, the log): a socket error alone (`read
 * ECONNRESET`, which is what a server restart gives when the reset comes before its goodbye)
 * names nothing, so a broken connection says that it is one and where.
 */
export function describeFailure(err: unknown, where: string): Error {
  const error = err instanceof Error ? err : new Error(String(err));
  const socket = /^(ECONNRESET|ECONNREFUSED|ECONNABORTED|EPIPE)$/.test((error as { code?: string }).code ?? '') || /\b(ECONNRESET|ECONNREFUSED|ECONNABORTED|EPIPE)\b/.test(error.message);
  if (!socket || /connection/i.test(error.message)) return error;
  return Object.assign(new Error(`connection lost (${where}): ${error.message}`, { cause: error }), { code: (error as { code?: string }).code });
}

/** Errors of the connection itself (the server went away): a reconnect, not a strict replay, is the answer. */
function isConnectionError(err: Error): boolean {
  const code = (err as { code?: string }).code ?? '';
  return /^(08|57P)/.test(code) || /terminat|connection|ECONNRE|EPIPE|not queryable|timeout|timed out|taken as hung/i.test(err.message);
}
