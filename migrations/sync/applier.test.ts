import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../core/logger.ts';
import { waitFor } from '../../stack/ports.ts';
import { createTestDatabase, dropTestDatabase } from '../../test/harness.ts';
import { TransactionApplier, type ApplierOptions, type SourceTx } from './applier.ts';
import { bigIntToLsn } from './lsn.ts';
import { ensureStateSchema, pipelineStore, readPipelineState } from './pipeline-store.ts';
import type { TablePlan } from './plan.ts';

/**
 * The transaction applier on a real target database, fed decoded changes directly (no
 * replication stream): grouping, runs, conflicts and ordering as specifications.
 */

const PIPELINE = 'bank:forward';
const col = (source: string, type: string, notNull = false) => ({ source, target: source, type, notNull });
const accounts: TablePlan = { source: 'accounts', target: 'accounts', key: ['id'], replica: false, rules: { columns: {}, exclude: [], newColumn: 'ignore', truncate: 'apply' }, columns: [col('id', 'bigint', true), col('email', 'text'), col('balance', 'integer'), col('note', 'text')] };
const parents: TablePlan = { source: 'parents', target: 'parents', key: ['id'], replica: false, rules: { columns: {}, exclude: [], newColumn: 'ignore', truncate: 'apply' }, columns: [col('id', 'bigint', true), col('name', 'text')] };
const children: TablePlan = { source: 'children', target: 'children', key: ['id'], replica: false, rules: { columns: {}, exclude: [], newColumn: 'ignore', truncate: 'apply' }, columns: [col('id', 'bigint', true), col('parent_id', 'bigint')] };

let url: string;
let target: pg.Client;
let other: pg.Client;
let ownOrigin: number;

beforeAll(async () => {
  url = await createTestDatabase('applier');
  target = new pg.Client({ connectionString: url });
  other = new pg.Client({ connectionString: url });
  await target.connect();
  await other.connect();
  await ensureStateSchema(target);
  // The applier's session carries its replication origin, as the worker's does.
  await target.query(`SELECT pg_replication_origin_create('applier_test_origin')`);
  await target.query(`SELECT pg_replication_origin_session_setup('applier_test_origin')`);
  ownOrigin = (await target.query(`SELECT roident::int AS id FROM pg_replication_origin WHERE roname = 'applier_test_origin'`)).rows[0].id;
});

afterAll(async () => {
  await target?.end();
  await other?.end();
  await dropTestDatabase(url);
});

beforeEach(async () => {
  await other.query(`DROP TABLE IF EXISTS accounts, children, parents`);
  await other.query(`CREATE TABLE accounts (id bigint PRIMARY KEY, email text UNIQUE, balance integer, note text)`);
  await other.query(`INSERT INTO accounts SELECT g, 'a' || g || '@x', 100, 'seed' FROM generate_series(1, 20) g`);
  await other.query(`CREATE TABLE parents (id bigint PRIMARY KEY, name text)`);
  await other.query(`CREATE TABLE children (id bigint PRIMARY KEY, parent_id bigint REFERENCES parents (id))`);
  await other.query(`INSERT INTO parents VALUES (1, 'old'); INSERT INTO children VALUES (1, 1)`);
  await other.query(`DELETE FROM strangler_sync.pipelines; DELETE FROM strangler_sync.conflicts`);
  await pipelineStore(PIPELINE).startAt(other, { slot: 's', publication: 'p' }, '0/1000');
});

function applier(options: Partial<ApplierOptions> = {}): TransactionApplier {
  return new TransactionApplier({ target, store: pipelineStore(PIPELINE), logger: silentLogger, pipeline: PIPELINE, checkConflicts: true, ownOrigin, ordered: false, ...options });
}

/** Source transaction n: commit LSNs one apart, commit times one millisecond apart from `baseUs`. */
let lsn = 0x2000n;
function tx(timeUs: bigint = BigInt(Date.now()) * 1000n): { tx: SourceTx; end: string } {
  lsn += 0x100n;
  return { tx: { commitLsn: bigIntToLsn(lsn), commitTimeUs: timeUs }, end: bigIntToLsn(lsn + 0x30n) };
}

const row = (id: number, email: string, balance: number, note = 'n') => ({ id: String(id), email, balance: String(balance), note });

describe('the transaction applier', () => {
  it('applies many source transactions as one target transaction that stores the end LSN of the last commit', async () => {
    const a = applier();
    let last = '';
    for (let i = 0; i < 200; i++) {
      const t = tx();
      await a.change(t.tx, accounts, 'update', row(1 + (i % 20), `a${1 + (i % 20)}@x`, i), null);
      if (i % 10 === 0) await a.change(t.tx, accounts, 'insert', row(1000 + i, `n${i}@x`, i), null);
      a.endTransaction(t.tx, t.end, new Date(), true, null);
      last = t.end;
    }
    const group = await a.commit();
    expect(group).toMatchObject({ lsn: last, transactions: 200, rows: 220 });
    const state = await readPipelineState(other, PIPELINE);
    expect(state).toMatchObject({ appliedLsn: last, transactionsApplied: 200, rowsApplied: 220 });
    // One target transaction: every row it wrote carries the same xmin.
    const xmins = await other.query(`SELECT DISTINCT xmin::text FROM accounts WHERE note = 'n'`);
    expect(xmins.rowCount).toBe(1);
    // Each key ends as its last change left it.
    expect((await other.query(`SELECT balance FROM accounts WHERE id = 1`)).rows[0].balance).toBe(180);
    expect((await other.query(`SELECT count(*)::int AS n FROM accounts`)).rows[0].n).toBe(40);
  });

  it('re-creates a row missing on the target from an update that carries every column, and refuses one that does not', async () => {
    await other.query(`DELETE FROM accounts WHERE id IN (5, 6)`);
    const a = applier();
    const t = tx();
    await a.change(t.tx, accounts, 'update', row(5, 'a5@x', 555), null);
    await a.change(t.tx, accounts, 'update', row(7, 'a7@x', 777), null);
    a.endTransaction(t.tx, t.end, new Date(), true, null);
    await a.commit();
    expect((await other.query(`SELECT id::int, balance FROM accounts WHERE id IN (5, 7) ORDER BY id`)).rows).toEqual([{ id: 5, balance: 555 }, { id: 7, balance: 777 }]);
    const u = tx();
    await a.change(u.tx, accounts, 'update', { id: '6', email: 'a6@x', balance: '6', note: undefined }, null);
    a.endTransaction(u.tx, u.end, new Date(), true, null);
    await expect(a.commit()).rejects.toThrow(/missing.*unchanged TOAST/);
    await a.rollback();
  });

  it('keeps a later local write and records the older change as a conflict, but never counts its own rows as conflicts', async () => {
    const a = applier();
    const now = BigInt(Date.now()) * 1000n;
    // Row 1 is written by the applier with a source time in the future (commit times of
    // concurrent source transactions are not ordered like their commits).
    const first = tx(now + 60_000_000n);
    await a.change(first.tx, accounts, 'update', row(1, 'a1@x', 1), null);
    a.endTransaction(first.tx, first.end, new Date(), true, null);
    await a.commit();
    // Row 2 is written locally, on the target, after the next source change was committed.
    const older = tx(now);
    // The local write's commit time must be later than the source change's: time is the subject.
    await new Promise((r) => setTimeout(r, 5));
    await other.query(`UPDATE accounts SET note = 'local' WHERE id = 2`);
    await a.change(older.tx, accounts, 'update', row(1, 'a1@x', 11), null);
    await a.change(older.tx, accounts, 'update', row(2, 'a2@x', 22), null);
    a.endTransaction(older.tx, older.end, new Date(), true, null);
    await a.commit();
    expect((await other.query(`SELECT id::int, balance, note FROM accounts WHERE id IN (1, 2) ORDER BY id`)).rows).toEqual([
      { id: 1, balance: 11, note: 'n' },
      { id: 2, balance: 100, note: 'local' },
    ]);
    const conflicts = await other.query(`SELECT table_name, key, kind FROM strangler_sync.conflicts`);
    expect(conflicts.rows).toEqual([{ table_name: 'accounts', key: { id: '2' }, kind: 'update' }]);
  });

  it('waits for a local write in progress and keeps it when it commits later than the source change (update and delete, the conflict check folded into the write)', async () => {
    const a = applier();
    // Source change after the seed rows, local write after the source change: time is the subject.
    await new Promise((r) => setTimeout(r, 5));
    const older = tx();
    await new Promise((r) => setTimeout(r, 5));
    await a.change(older.tx, accounts, 'update', row(3, 'a3@x', 33), null);
    await a.change(older.tx, accounts, 'delete', { id: '4' }, null);
    await a.change(older.tx, accounts, 'update', row(5, 'a5@x', 55), null);
    await a.change(older.tx, accounts, 'delete', { id: '6' }, null);
    a.endTransaction(older.tx, older.end, new Date(), true, null);
    // A local transaction holds rows 3 and 4 while the group is applied: the applier waits
    // for it and, once it has committed (later than the source change), keeps its rows.
    const local = new pg.Client({ connectionString: url });
    await local.connect();
    try {
      await local.query(`BEGIN`);
      await local.query(`UPDATE accounts SET note = 'local' WHERE id IN (3, 4)`);
      const applying = a.commit();
      // The applier's backend is blocked on the local transaction's row locks before it commits.
      await waitFor('the applier to wait on the local row locks', async () => (await other.query(`SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'`)).rows[0].n > 0, 10_000, 5);
      await local.query(`COMMIT`);
      await applying;
    } finally {
      await local.end();
    }
    expect((await other.query(`SELECT id::int, balance, note FROM accounts WHERE id BETWEEN 3 AND 6 ORDER BY id`)).rows).toEqual([
      { id: 3, balance: 100, note: 'local' },
      { id: 4, balance: 100, note: 'local' },
      { id: 5, balance: 55, note: 'n' },
    ]);
    const conflicts = await other.query(`SELECT key, kind FROM strangler_sync.conflicts ORDER BY key->>'id'`);
    expect(conflicts.rows).toEqual([
      { key: { id: '3' }, kind: 'update' },
      { key: { id: '4' }, kind: 'delete' },
    ]);
  });

  it('applies changes of rows with an array column (written from a VALUES list, not unnest)', async () => {
    await other.query(`DROP TABLE IF EXISTS tagged; CREATE TABLE tagged (id bigint PRIMARY KEY, tags text[])`);
    await other.query(`INSERT INTO tagged VALUES (1, '{a}'), (2, '{b}'), (3, '{c}')`);
    const tagged: TablePlan = { ...parents, source: 'tagged', target: 'tagged', columns: [col('id', 'bigint', true), col('tags', 'text[]')] };
    const a = applier();
    // A source change committed after the seed rows (no conflict).
    const t = tx(BigInt(Date.now() + 60_000) * 1000n);
    await a.change(t.tx, tagged, 'update', { id: '1', tags: '{x,"y z"}' }, null);
    await a.change(t.tx, tagged, 'update', { id: '2', tags: '{}' }, null);
    await a.change(t.tx, tagged, 'delete', { id: '3' }, null);
    a.endTransaction(t.tx, t.end, new Date(), true, null);
    await a.commit();
    expect((await other.query(`SELECT id::int, tags FROM tagged ORDER BY id`)).rows).toEqual([
      { id: 1, tags: ['x', 'y z'] },
      { id: 2, tags: [] },
    ]);
  });

  it('keeps the order of changes across tables when the target has foreign keys between them', async () => {
    const a = applier({ ordered: true });
    const t1 = tx();
    await a.change(t1.tx, parents, 'insert', { id: '2', name: 'new' }, null);
    await a.change(t1.tx, children, 'insert', { id: '2', parent_id: '2' }, null);
    a.endTransaction(t1.tx, t1.end, new Date(), true, null);
    const t2 = tx();
    await a.change(t2.tx, children, 'delete', { id: '1' }, null);
    await a.change(t2.tx, parents, 'delete', { id: '1' }, null);
    a.endTransaction(t2.tx, t2.end, new Date(), true, null);
    await a.commit();
    expect((await other.query(`SELECT id::int, parent_id::int FROM children`)).rows).toEqual([{ id: 2, parent_id: 2 }]);
    expect((await other.query(`SELECT id::int FROM parents`)).rows).toEqual([{ id: 2 }]);
  });

  it('collects the next group while the previous one commits behind it, and reports it committed only once it is', async () => {
    const a = applier();
    const first = tx();
    await a.change(first.tx, accounts, 'update', row(1, 'a1@x', 1), null);
    a.endTransaction(first.tx, first.end, new Date(), true, null);
    const committed: string[] = [];
    await a.commitBehind((done) => committed.push(done.lsn));
    // The next group collects at once; its commit waits for the one behind it.
    const second = tx();
    await a.change(second.tx, accounts, 'update', row(2, 'a2@x', 2), null);
    a.endTransaction(second.tx, second.end, new Date(), true, null);
    const done = await a.commit();
    expect(committed).toEqual([first.end]);
    expect(done?.lsn).toBe(second.end);
    expect((await readPipelineState(other, PIPELINE))?.appliedLsn).toBe(second.end);
    // Two target transactions, in order.
    expect((await other.query(`SELECT count(DISTINCT xmin::text)::int AS n FROM accounts WHERE id IN (1, 2)`)).rows[0].n).toBe(2);
  });

  it('fails the next group when the group committing behind it failed, and commits neither', async () => {
    const a = applier();
    // Group 1 moves a unique value between rows in one batched statement: it fails on the target.
    for (const [id, email] of [[1, 'tmp@x'], [2, 'a1@x'], [1, 'a2@x']] as const) {
      const t = tx();
      await a.change(t.tx, accounts, 'update', row(id, email, 7), null);
      a.endTransaction(t.tx, t.end, new Date(), true, null);
    }
    const committed: string[] = [];
    await a.commitBehind((done) => committed.push(done.lsn));
    const next = tx();
    await a.change(next.tx, accounts, 'update', row(3, 'a3@x', 3), null);
    a.endTransaction(next.tx, next.end, new Date(), true, null);
    await expect(a.commit()).rejects.toThrow(/duplicate key/);
    await a.rollback();
    expect(committed).toEqual([]);
    expect((await readPipelineState(other, PIPELINE))?.appliedLsn).toBe('0/1000');
    expect((await other.query(`SELECT count(*)::int AS n FROM accounts WHERE balance <> 100`)).rows[0].n).toBe(0);
    // The connection is usable again: the worker replays from the applied LSN.
    const again = tx();
    await a.change(again.tx, accounts, 'update', row(3, 'a3@x', 33), null);
    a.endTransaction(again.tx, again.end, new Date(), true, null);
    expect((await a.commit())?.lsn).toBe(again.end);
  });

  it('fails a group whose batched updates move a unique value between rows, and applies the same transactions in strict mode', async () => {
    const swap = async (a: TransactionApplier) => {
      for (const [id, email] of [[1, 'tmp@x'], [2, 'a1@x'], [1, 'a2@x']] as const) {
        const t = tx();
        await a.change(t.tx, accounts, 'update', row(id, email, 100), null);
        a.endTransaction(t.tx, t.end, new Date(), true, null);
      }
      return a.commit();
    };
    const fast = applier();
    await expect(swap(fast)).rejects.toThrow(/duplicate key/);
    await fast.rollback();
    expect((await other.query(`SELECT email FROM accounts WHERE id IN (1, 2) ORDER BY id`)).rows.map((r) => r.email)).toEqual(['a1@x', 'a2@x']);
    const strict = applier();
    strict.strict = true;
    await swap(strict);
    expect((await other.query(`SELECT email FROM accounts WHERE id IN (1, 2) ORDER BY id`)).rows.map((r) => r.email)).toEqual(['a2@x', 'a1@x']);
  });
});
