import { describe, expect, it } from 'vitest';
import { copyRows, deleteManyStatement, insertManyStatement, updateStatement } from './apply.ts';
import { compareLsn, lsnDistance, lsnToBigInt, normalizeLsn } from './lsn.ts';
import { buildSyncPlan, pipelineNames, targetTableDdl, type SourceTable, type TablePlan } from './plan.ts';

const table: TablePlan = {
  source: 'invoices',
  target: 'svc_invoices',
  key: ['id'],
  replica: false,
  rules: { columns: { customer_name: 'customer' }, exclude: [], newColumn: 'ignore', truncate: 'apply' },
  columns: [
    { source: 'id', target: 'id', type: 'integer', notNull: true },
    { source: 'customer_name', target: 'customer', type: 'text', notNull: true },
    { source: 'body', target: 'body', type: 'text', notNull: false },
  ],
};

describe('apply statements', () => {
  it('leaves an unchanged TOAST column out of the UPDATE and matches the old key', () => {
    expect(updateStatement(table, { id: '7' }, { id: '8', customer_name: 'A', body: undefined })).toEqual({
      sql: 'UPDATE "svc_invoices" SET "id" = $1, "customer" = $2 WHERE "id" = $3',
      params: ['8', 'A', '7'],
    });
  });

  it('batches inserts and deletes through the column mapping', () => {
    expect(insertManyStatement(table, [{ id: '1', customer_name: 'A', body: null }, { id: '2', customer_name: 'B', body: 'x' }]).sql).toBe(
      'INSERT INTO "svc_invoices" ("id", "customer", "body") VALUES ($1, $2, $3), ($4, $5, $6) ON CONFLICT ("id") DO UPDATE SET "customer" = excluded."customer", "body" = excluded."body"',
    );
    expect(deleteManyStatement(table, [{ id: '1' }, { id: '2' }])).toEqual({ sql: 'DELETE FROM "svc_invoices" WHERE ("id") IN (($1), ($2))', params: ['1', '2'] });
  });

  it('escapes COPY text: backslash, tab, newline, carriage return, and NULL as \\N', () => {
    expect(copyRows(table, [{ id: '1', customer_name: 'a\tb\nc\\d\re', body: null }]).data).toBe('1\ta\\tb\\nc\\\\d\\re\t\\N\n');
  });
});

describe('LSNs', () => {
  it('compares and measures positions', () => {
    expect(lsnToBigInt('1/0')).toBe(4294967296n);
    expect(compareLsn('0/FFFFFFFF', '1/0')).toBe(-1);
    expect(lsnDistance('0/10', '0/30')).toBe(32);
    expect(lsnDistance('0/30', '0/10')).toBe(0);
    expect(compareLsn('1/A', '1/A')).toBe(0);
    expect(compareLsn('00000001/0000000B', '1/A')).toBe(1);
    expect(compareLsn('2/0', '1/FFFFFFFF')).toBe(1);
  });

  it('prints LSNs one way, as PostgreSQL does', () => {
    expect(normalizeLsn('00000000/32CDCC60')).toBe('0/32CDCC60');
    expect(normalizeLsn('0000001a/000000ff')).toBe('1A/FF');
    expect(() => normalizeLsn('garbage')).toThrow(/not an LSN/);
  });
});

describe('sync plan', () => {
  const catalog = new Map<string, SourceTable>([
    ['invoices', { name: 'invoices', replicaIdentity: 'default', hasPrimaryKey: true, keyColumns: ['id'], columns: [{ name: 'id', type: 'integer', notNull: true, userDefined: false }, { name: 'metadata', type: 'jsonb', notNull: true, userDefined: false }, { name: 'mood', type: 'mood', notNull: false, userDefined: true }] }],
    ['log', { name: 'log', replicaIdentity: 'default', hasPrimaryKey: false, keyColumns: [], columns: [{ name: 'at', type: 'timestamp with time zone', notNull: false, userDefined: false }] }],
  ]);
  const service = (tables: Array<{ source: string; exclude?: string[]; columns?: Record<string, string> }>) =>
    ({ name: 'invoices', tables: tables.map((t) => ({ target: t.source, columns: {}, exclude: [], replica: false, ...t })) }) as never;

  it('maps, renames and excludes columns, and writes the target DDL', () => {
    const plan = buildSyncPlan(service([{ source: 'invoices', exclude: ['mood'], columns: { metadata: 'meta' } }]), catalog, 'postgres://h/legacy_db');
    expect(plan).toMatchObject({ slot: 'strangler_legacy_db_invoices', publication: 'strangler_invoices', pipeline: 'invoices:forward' });
    expect(targetTableDdl(plan.tables[0])).toBe('CREATE TABLE IF NOT EXISTS "invoices" ("id" integer NOT NULL, "meta" jsonb NOT NULL, PRIMARY KEY ("id"))');
  });

  it('refuses, all at once, a table without a key, a user-defined type, an unknown column and a missing table', () => {
    expect(() => buildSyncPlan(service([{ source: 'invoices' }, { source: 'log' }, { source: 'nope' }, { source: 'invoices', exclude: ['mood'], columns: { ghost: 'spirit' } }]), catalog, 'postgres://h/l')).toThrow(
      /user-defined types \(mood mood\)[\s\S]*"log" has no primary key or replica identity[\s\S]*ALTER TABLE log ADD PRIMARY KEY[\s\S]*"nope" does not exist[\s\S]*column "ghost" does not exist/,
    );
  });

  it('names slots after the legacy database, so two monoliths on one cluster never share one', () => {
    expect(pipelineNames('auth', 'postgres://h:5432/shop').slot).not.toBe(pipelineNames('auth', 'postgres://h:5432/blog').slot);
  });
});
