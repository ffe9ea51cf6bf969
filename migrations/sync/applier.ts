import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { Logger } from '../../core/logger.ts';
import {
  conflictCheckStatement,
  copyRows,
  deleteManyStatement,
  insertManyStatement,
  insertStatement,
  isComplete,
  keyString,
  MAX_PARAMS,
  sameShape,
  updateManyStatement,
  updateStatement,
  writeUnlessLaterStatement,
  type Statement,
  type Tuple,
} from './apply.ts';
import type { AppliedGroup, PipelineStore } from './pipeline-store.ts';
import { quoteIdent as q, type TablePlan } from './plan.ts';

/** A source transaction as the stream delivers it. */
export interface SourceTx {
  /** Where its commit record starts. */
  commitLsn: string;
  /** Its commit time, microseconds since 1970: the rows it changes are checked for conflicts with it. */
  commitTimeUs: bigint;
}

type Kind = 'insert' | 'update' | 'delete';

/** Consecutive changes of one table and kind, sent as one statement. */
interface Run {
  table: TablePlan;
  kind: Kind;
  /** insert, update: the new rows; delete: the keys. */
  rows: Tuple[];
  /** Each row's source commit time. */
  times: bigint[];
}

/**
 * The net effect of one key's changes in a group (tables whose order across tables does not
 * matter): the last change decides, rows merged so that a column an update left out
 * (unchanged TOAST) keeps what an earlier change of the group set.
 */
interface Net {
  final: Kind;
  row: Tuple;
  /** Only one change, an insert: the row is new (COPY may carry it). */
  fresh: boolean;
  /** The source commit times of its updates and deletes, each checked for a later local write (of the key `row` carries). */
  times: bigint[];
}

export interface ApplierOptions {
  target: pg.Client;
  store: PipelineStore;
  logger: Logger;
  pipeline: string;
  /** Check conflicts (the target keeps commit timestamps). */
  checkConflicts: boolean;
  /** This pipeline's replication origin id on the target: rows it wrote itself are never conflicts. null: the server cannot tell (before PostgreSQL 14). */
  ownOrigin: number | null;
  /**
   * Keep the source's order of changes across tables (the target has foreign keys or triggers
   * on them): only consecutive changes of one table and kind share a statement.
   */
  ordered: boolean;
}

/** The rows a run may hold before it is sent: statements stay under the parameter limit. */
function runLimit(table: TablePlan, kind: Kind): number {
  const perRow = kind === 'delete' ? table.key.length : table.columns.length;
  return Math.min(kind === 'insert' ? 5_000 : 1_000, Math.floor(MAX_PARAMS / Math.max(perRow + 2, 1)));
}

/** Which columns a row carries (an update leaves unchanged TOAST out): rows of one shape share a statement. */
function shapeOf(table: TablePlan, row: Tuple): string {
  let shape = '';
  for (const c of table.columns) shape += row[c.source] === undefined ? '0' : '1';
  return shape;
}

/** The keys a statement RETURNING `__k0`, `__k1`… gave back, as keyString makes them. */
function returnedKeys(table: TablePlan, rows: Array<Record<string, string>>): Set<string> {
  if (table.key.length === 1) return new Set(rows.map((r) => r.__k0));
  return new Set(rows.map((r) => table.key.map((_, i) => r[`__k${i}`]).join('\u0000')));
}

/** One group: what it has collected, and whether its target transaction is open. */
interface GroupState {
  open: boolean;
  runs: Map<TablePlan, Run>;
  nets: Map<TablePlan, Map<string, Net>>;
  group: AppliedGroup & { minCommitUs: bigint | null; startedAt: number };
}

const newGroup = (): GroupState => ({ open: false, runs: new Map(), nets: new Map(), group: { lsn: '', sourceCommitAt: null, rows: 0, transactions: 0, heartbeat: null, minCommitUs: null, startedAt: 0 } });

/**
 * Applies source transactions to the target, several to one target transaction (a group):
 * one commit, one bookkeeping write and one flush to disk for all of them, which is what lets
 * it keep up with many small source transactions. The group's target transaction stores the
 * end LSN of its last source commit, so exactly-once holds per group: a crash rolls the whole
 * group back and the stream resends it.
 *
 * Within a group, changes are sent as runs: consecutive changes of one table and kind in one
 * statement (an UPDATE … FROM VALUES keeps the last change of each key: the rows end the same).
 * Unless `ordered`, a table's run stays open while other tables change (targets without
 * foreign keys between the tables: each table's own order is all that matters). A batched
 * statement that fails where one change at a time would not (a unique value moved between two
 * rows) fails the group; the worker then replays those transactions in `strict` mode: one
 * source transaction per target transaction, every update on its own, the source's order.
 */
export class TransactionApplier {
  readonly #o: ApplierOptions;
  /** The group collecting changes now. */
  #s = newGroup();
  /** The group before it, still being applied and committed (commitBehind): at most one. */
  #behind: Promise<void> | null = null;
  #behindRunning = false;
  #strict = false;

  constructor(options: ApplierOptions) {
    this.#o = options;
  }

  /** One source transaction per group, every change in the source's order, updates one by one. */
  set strict(value: boolean) {
    this.#strict = value;
  }

  get strict(): boolean {
    return this.#strict;
  }

  /** Source transactions ended in the open group (applied or skipped). */
  get pending(): { transactions: number; rows: number; ageMs: number; lsn: string } {
    const g = this.#s.group;
    return { transactions: g.transactions, rows: g.rows, ageMs: g.startedAt ? Date.now() - g.startedAt : 0, lsn: g.lsn };
  }

  /** The open group has reached one of these limits (asked once per source transaction: no object made). */
  reached(limits: { transactions: number; rows: number; ms: number }): boolean {
    const g = this.#s.group;
    return g.transactions >= limits.transactions || g.rows >= limits.rows || (g.startedAt !== 0 && Date.now() - g.startedAt >= limits.ms);
  }

  /** A source transaction ended in the open group (pending.lsn is set), without making an object to say so. */
  get hasPending(): boolean {
    return this.#s.group.lsn !== '';
  }

  /** The group before the current one is still being applied or committed (commitBehind). */
  get committing(): boolean {
    return this.#behindRunning;
  }

  /** Resolves once the group committing behind is done, either way (its error is for settle()). */
  behindDone(): Promise<void> {
    const behind = this.#behind;
    return behind ? behind.then(() => undefined, () => undefined) : Promise.resolve();
  }

  /** A target transaction is open (locks may be held): the current group's or the one committing behind it. */
  get open(): boolean {
    return this.#s.open || this.#behind !== null;
  }

  /**
   * Waits until the group committing behind the current one (commitBehind) is committed;
   * throws its error if it failed (it was rolled back; the stream must resend it).
   */
  async settle(): Promise<void> {
    const behind = this.#behind;
    if (!behind) return;
    try {
      await behind;
    } finally {
      if (this.#behind === behind) this.#behind = null;
    }
  }

  async #begin(s: GroupState): Promise<void> {
    if (s.open) return;
    // The group's statements go after the previous group's COMMIT, never into its transaction.
    if (s === this.#s) await this.settle();
    // Prepared statements (writeUnlessLaterStatement) run their generic plan: index probes per key.
    await this.#o.target.query('BEGIN; SET LOCAL plan_cache_mode = force_generic_plan');
    s.open = true;
    if (!s.group.startedAt) s.group.startedAt = Date.now();
  }

  async #run(s: GroupState, st: Statement): Promise<pg.QueryResult> {
    await this.#begin(s);
    return this.#o.target.query(st.name ? { name: st.name, text: st.sql, values: st.params } : { text: st.sql, values: st.params });
  }

  /**
   * One decoded row change of a table this pipeline applies. Returns a promise only when it had
   * to send something to the target (most changes are only collected: the stream's fast path).
   */
  change(tx: SourceTx, table: TablePlan, kind: Kind, row: Tuple, oldKey: Tuple | null): Promise<void> | undefined {
    const s = this.#s;
    if (!s.group.startedAt) s.group.startedAt = Date.now();
    s.group.rows++;
    if (kind === 'update') {
      // A key change moves the row: its old key finds it, one statement of its own.
      const moved = oldKey !== null && table.key.some((k) => oldKey[k] !== undefined && oldKey[k] !== row[k]);
      if (moved || this.#strict || table.key.some((k) => row[k] === undefined)) return this.#changeAlone(s, tx, table, oldKey, row);
    }
    if (!this.#o.ordered && !this.#strict) return this.#addNet(s, tx, table, kind, row);
    // Ordered: the change joins its table's run, unless something must be sent first.
    const run = s.runs.get(table);
    if (run ? s.runs.size === 1 && run.kind === kind && sameShape(run.rows[0], row) && run.rows.length < runLimit(table, kind) : s.runs.size === 0) {
      const joined = run ?? { table, kind, rows: [], times: [] };
      if (!run) s.runs.set(table, joined);
      joined.rows.push(row);
      joined.times.push(tx.commitTimeUs);
      return undefined;
    }
    return this.#addToRun(s, tx, table, kind, row);
  }

  async #changeAlone(s: GroupState, tx: SourceTx, table: TablePlan, oldKey: Tuple | null, row: Tuple): Promise<void> {
    await this.#flushNet(s, table);
    await this.#flushBefore(s, table, null);
    await this.#updateOne(s, tx, table, oldKey, row);
  }

  async #addToRun(s: GroupState, tx: SourceTx, table: TablePlan, kind: Kind, row: Tuple): Promise<void> {
    let run = await this.#flushBefore(s, table, kind);
    if (run && (!sameShape(run.rows[0], row) || run.rows.length >= runLimit(table, kind))) {
      await this.#flushRun(s, run);
      run = undefined;
    }
    if (!run) {
      run = { table, kind, rows: [], times: [] };
      s.runs.set(table, run);
    }
    run.rows.push(row);
    run.times.push(tx.commitTimeUs);
  }

  #addNet(s: GroupState, tx: SourceTx, table: TablePlan, kind: Kind, row: Tuple): Promise<void> | undefined {
    let nets = s.nets.get(table);
    if (!nets) s.nets.set(table, (nets = new Map()));
    const k = keyString(table, row);
    const prev = nets.get(k);
    // A key's times are its own array, grown in place (a key changes once in most groups).
    const times = prev ? prev.times : [];
    if (kind === 'delete') {
      times.push(tx.commitTimeUs);
      nets.set(k, { final: 'delete', row, fresh: false, times });
    } else if (kind === 'insert') nets.set(k, { final: 'insert', row, fresh: !prev, times });
    else if (prev && prev.final !== 'delete') {
      // An update after this group's insert changes the group's own row: no local write can
      // be in between. After an update, it is checked like the first.
      const merged = { ...prev.row };
      for (const c in row) if (row[c] !== undefined) merged[c] = row[c];
      if (prev.final !== 'insert') times.push(tx.commitTimeUs);
      nets.set(k, { final: prev.final, row: merged, fresh: false, times });
    } else {
      times.push(tx.commitTimeUs);
      nets.set(k, { final: 'update', row, fresh: false, times });
    }
    return nets.size >= runLimit(table, 'insert') ? this.#flushNet(s, table) : undefined;
  }

  /**
   * Applies the net changes of a table: conflicts checked in one statement, then deletes,
   * new rows (COPY when many), upserts of complete rows, updates of partial ones.
   */
  async #flushNet(s: GroupState, table: TablePlan): Promise<void> {
    const nets = s.nets.get(table);
    if (!nets || nets.size === 0) return;
    s.nets.delete(table);
    const entries = await this.#writeUnlessLater(s, table, [...nets.values()]);
    // Every check of a key is of the key its net row carries (keys do not change on this path).
    const checks = entries.flatMap((e) => e.times.map((time, i) => ({ key: e.row, time, entry: e, last: i === e.times.length - 1 })));
    const conflicted = await this.#conflicts(s, { table, kind: 'update', rows: checks.map((c) => c.key), times: checks.map((c) => c.time) }, checks.map((c) => (c.entry.final === 'delete' && c.last ? 'delete' : 'update')));
    const skipped = new Set<Net>();
    checks.forEach((c, i) => {
      // The key's last change lost to a later local write: the key keeps the local row.
      if (c.last && conflicted.has(i) && c.entry.final !== 'insert') skipped.add(c.entry);
    });
    const live = entries.filter((e) => !skipped.has(e));
    const deletes = live.filter((e) => e.final === 'delete').map((e) => e.row);
    for (let i = 0; i < deletes.length; i += 500) await this.#run(s, deleteManyStatement(table, deletes.slice(i, i + 500)));
    const complete = live.filter((e) => e.final !== 'delete' && isComplete(table, e.row));
    const fresh = complete.filter((e) => e.fresh);
    const copied = new Set<Net>();
    if (fresh.length >= 50) {
      // New rows only (inserted once in this group, after any delete of them was applied): COPY.
      await this.#begin(s);
      const { sql, data } = copyRows(table, fresh.map((e) => e.row));
      await pipeline(Readable.from([data]), this.#o.target.query(copyFrom(sql)));
      for (const e of fresh) copied.add(e);
    }
    const upserts = complete.filter((e) => !copied.has(e)).map((e) => e.row);
    const perStatement = Math.max(1, Math.floor(MAX_PARAMS / table.columns.length));
    for (let i = 0; i < upserts.length; i += perStatement) await this.#run(s, insertManyStatement(table, upserts.slice(i, i + perStatement)));
    // Updates that leave a column out (unchanged TOAST), by the columns they carry.
    const partial = live.filter((e) => e.final !== 'delete' && !isComplete(table, e.row));
    const shapes = new Map<string, Tuple[]>();
    for (const e of partial) {
      const shape = shapeOf(table, e.row);
      shapes.set(shape, [...(shapes.get(shape) ?? []), e.row]);
    }
    for (const rows of shapes.values()) {
      const found = returnedKeys(table, (await this.#run(s, updateManyStatement(table, rows))).rows);
      for (const row of rows) if (!found.has(keyString(table, row))) await this.#recreate(s, table, row);
    }
  }

  /**
   * Deletes and updates of existing rows with the conflict check folded into the write (one
   * statement per kind and shape, see writeUnlessLaterStatement). Returns the entries left for
   * the general path: new rows, and the keys the fast path did not write (missing on the
   * target, or in conflict: checked, recorded and decided there exactly as before).
   */
  async #writeUnlessLater(s: GroupState, table: TablePlan, entries: Net[]): Promise<Net[]> {
    if (!this.#o.checkConflicts) return entries;
    const groups = new Map<string, Net[]>();
    const rest: Net[] = [];
    for (const e of entries) {
      if (e.final === 'insert' || e.times.length === 0) {
        rest.push(e);
        continue;
      }
      const shape = e.final === 'delete' ? 'delete' : shapeOf(table, e.row);
      const list = groups.get(shape);
      if (list) list.push(e);
      else groups.set(shape, [e]);
    }
    // Deletes first, as on the general path: a unique value a deleted row held may be taken by another.
    const shapes = [...groups.keys()].sort((a, b) => (a === 'delete' ? -1 : b === 'delete' ? 1 : 0));
    for (const shape of shapes) {
      const list = groups.get(shape)!;
      const kind = shape === 'delete' ? 'delete' : 'update';
      const perRow = (kind === 'delete' ? table.key.length : table.columns.length) + 1;
      const chunk = Math.max(1, Math.floor(MAX_PARAMS / perRow));
      for (let i = 0; i < list.length; i += chunk) {
        const part = list.slice(i, i + chunk);
        const earliest = part.map((e) => e.times.reduce((min, t) => (t < min ? t : min), e.times[0]));
        const written = returnedKeys(table, (await this.#run(s, writeUnlessLaterStatement(table, kind, part.map((e) => e.row), earliest, this.#o.ownOrigin))).rows);
        for (const e of part) if (!written.has(keyString(table, e.row))) rest.push(e);
      }
    }
    return rest;
  }

  /**
   * Sends the runs that must go before a change of `kind` to `table` (null: before a change
   * sent on its own): every other table's when ordered, this table's when its kind differs.
   * Returns this table's run that the change may join.
   */
  async #flushBefore(s: GroupState, table: TablePlan, kind: Kind | null): Promise<Run | undefined> {
    if (this.#o.ordered || this.#strict) {
      for (const run of [...s.runs.values()]) if (run.table !== table || run.kind !== kind) await this.#flushRun(s, run);
    }
    const run = s.runs.get(table);
    if (run && run.kind !== kind) {
      await this.#flushRun(s, run);
      return undefined;
    }
    return run;
  }

  /** Sends everything pending for a table (its shape is about to change). */
  async flushTable(table: TablePlan): Promise<void> {
    const s = this.#s;
    await this.#flushNet(s, table);
    for (const run of [...s.runs.values()]) if (run.table === table || this.#o.ordered || this.#strict) await this.#flushRun(s, run);
  }

  /** Runs `fn` in the group's target transaction (opened if need be): bookkeeping and DDL that must commit with the rows. */
  async inTransaction<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
    await this.#begin(this.#s);
    return fn(this.#o.target);
  }

  /** TRUNCATE of tables this pipeline applies: after every change before it. */
  async truncate(tables: TablePlan[]): Promise<void> {
    const s = this.#s;
    await this.#flushAll(s);
    for (const table of tables) await this.#run(s, { sql: `TRUNCATE ${q(table.target)}`, params: [] });
  }

  /** A source transaction ended (`applied` false: skipped, an echo of the other direction). */
  endTransaction(tx: SourceTx, commitEndLsn: string, commitTime: Date | null, applied: boolean, heartbeat: string | null): void {
    const g = this.#s.group;
    if (!g.startedAt) g.startedAt = Date.now();
    g.lsn = commitEndLsn;
    if (!applied) return;
    g.transactions++;
    if (commitTime) g.sourceCommitAt = commitTime;
    if (heartbeat) g.heartbeat = heartbeat;
    if (g.minCommitUs === null || tx.commitTimeUs < g.minCommitUs) g.minCommitUs = tx.commitTimeUs;
  }

  /**
   * Sends what is left, records the group's end in the pipeline's row (and whatever `also`
   * writes, in the same transaction) and commits. Returns what was applied, or null when no
   * source transaction ended since the last commit.
   */
  async commit(also?: (client: pg.Client) => Promise<void>): Promise<(AppliedGroup & { hold: boolean }) | null> {
    await this.settle();
    const s = this.#s;
    if (!s.group.lsn) return null;
    const done = await this.#commit(s, also);
    this.#s = newGroup();
    return done;
  }

  /**
   * Commits the group behind the next one: a new group starts collecting at once while this
   * one's statements and COMMIT run on the target (the worker decodes and sorts the next
   * source transactions meanwhile, instead of waiting). The next group's first statement,
   * commit() and settle() wait for it first, so the target sees the groups one after the
   * other, as before; `onCommitted` runs once it is committed (only then may the source be
   * acknowledged). If it fails, it is rolled back and the next settle point throws its error.
   */
  async commitBehind(onCommitted: (done: AppliedGroup & { hold: boolean }) => void): Promise<void> {
    await this.settle();
    const s = this.#s;
    if (!s.group.lsn) return;
    this.#s = newGroup();
    this.#behindRunning = true;
    const behind = this.#commit(s)
      .then(onCommitted, async (err) => {
        if (s.open) {
          s.open = false;
          await this.#o.target.query('ROLLBACK').catch(() => undefined);
        }
        throw err;
      })
      .finally(() => {
        this.#behindRunning = false;
      });
    // Observed at the next settle point, not here.
    behind.catch(() => undefined);
    this.#behind = behind;
  }

  async #commit(s: GroupState, also?: (client: pg.Client) => Promise<void>): Promise<AppliedGroup & { hold: boolean }> {
    const g = s.group;
    await this.#flushAll(s);
    await this.#begin(s);
    await also?.(this.#o.target);
    // The rows carry a source commit time (track_commit_timestamp): the group's earliest, so a
    // later change of one of them never looks older than it (and own rows are skipped anyway).
    const hold = await this.#o.store.appliedAndCommit(this.#o.target, g, g.minCommitUs ?? 0n);
    s.open = false;
    return { ...g, hold };
  }

  /** Drops the open group, after the one committing behind it has finished either way (the stream will send what is not committed again). */
  async rollback(): Promise<void> {
    await this.settle().catch(() => undefined);
    const s = this.#s;
    this.#s = newGroup();
    if (s.open) {
      s.open = false;
      await this.#o.target.query('ROLLBACK').catch(() => undefined);
    }
  }

  async #flushAll(s: GroupState): Promise<void> {
    for (const table of [...s.nets.keys()]) await this.#flushNet(s, table);
    for (const run of [...s.runs.values()]) await this.#flushRun(s, run);
  }

  async #flushRun(s: GroupState, run: Run): Promise<void> {
    s.runs.delete(run.table);
    const { table } = run;
    if (run.kind === 'insert') {
      if (run.rows.length >= 50) {
        // Large runs go through COPY. No conflict is possible: transactions at or below the
        // applied LSN are never resent, and an interrupted group was rolled back whole.
        await this.#begin(s);
        const { sql, data } = copyRows(table, run.rows);
        await pipeline(Readable.from([data]), this.#o.target.query(copyFrom(sql)));
        return;
      }
      await this.#run(s, insertManyStatement(table, run.rows));
      return;
    }
    const conflicted = await this.#conflicts(s, run);
    if (run.kind === 'delete') {
      const keep = run.rows.filter((_, i) => !conflicted.has(i));
      if (keep.length) await this.#run(s, deleteManyStatement(table, keep));
      return;
    }
    // Updates: the last change of each key, unless a later local write keeps the row (then
    // every earlier change of that key is older still, and conflicts too).
    const last = new Map<string, number>();
    run.rows.forEach((row, i) => last.set(keyString(table, row), i));
    const rows = [...last.values()].filter((i) => !conflicted.has(i)).map((i) => run.rows[i]);
    if (rows.length === 0) return;
    if (rows.length === 1) {
      await this.#updateRow(s, table, null, rows[0]);
      return;
    }
    const found = returnedKeys(table, (await this.#run(s, updateManyStatement(table, rows))).rows);
    for (const row of rows) if (!found.has(keyString(table, row))) await this.#recreate(s, table, row);
  }

  async #updateOne(s: GroupState, tx: SourceTx, table: TablePlan, oldKey: Tuple | null, row: Tuple): Promise<void> {
    const conflicted = await this.#conflicts(s, { table, kind: 'update', rows: [oldKey ?? row], times: [tx.commitTimeUs] });
    if (conflicted.size) return;
    await this.#updateRow(s, table, oldKey, row);
  }

  async #updateRow(s: GroupState, table: TablePlan, oldKey: Tuple | null, row: Tuple): Promise<void> {
    const result = await this.#run(s, updateStatement(table, oldKey, row));
    if (result.rowCount === 0) await this.#recreate(s, table, row);
  }

  /** An updated row missing on the target is inserted, if the change carries all of it. */
  async #recreate(s: GroupState, table: TablePlan, row: Tuple): Promise<void> {
    if (!isComplete(table, row)) {
      throw new Error(`row of "${table.target}" to update is missing and the change does not carry every column (unchanged TOAST); run: strangler sync verify`);
    }
    await this.#run(s, insertStatement(table, row));
  }

  /**
   * Conflicts: target rows another writer committed after the source change (a write on the
   * other side within the lag). The later commit wins: those changes are skipped and recorded
   * (strangler status shows the count). Returns the indices of the skipped rows of the run.
   */
  async #conflicts(s: GroupState, run: Run, kinds?: Kind[]): Promise<Set<number>> {
    const out = new Set<number>();
    if (!this.#o.checkConflicts || run.rows.length === 0) return out;
    const { table } = run;
    const chunk = Math.max(1, Math.floor(MAX_PARAMS / (table.key.length + 2)));
    for (let start = 0; start < run.rows.length; start += chunk) {
      const keys = run.rows.slice(start, start + chunk);
      const result = await this.#run(s, conflictCheckStatement(table, keys, run.times.slice(start, start + chunk), this.#o.ownOrigin));
      for (const r of result.rows) {
        const i = start + Number(r.__i);
        out.add(i);
        const key = Object.fromEntries(table.key.map((k) => [k, run.rows[i][k]]));
        const kind = kinds?.[i] ?? run.kind;
        await this.#o.store.conflict(this.#o.target, { table: table.target, key, kind, sourceAt: r.source_at, targetAt: r.local_at });
        this.#o.logger.warn({ pipeline: this.#o.pipeline, table: table.target, key, kind }, 'conflict: the target row was written later; kept it');
      }
    }
    return out;
  }
}
