import { describe, expect, it } from 'vitest';
import { copyRows, deleteManyStatement, insertManyStatement, updateStatement } from './apply.ts';
import { bigIntToLsn, compareLsn, lsnDistance, lsnText, lsnToBigInt } from './lsn.ts';
import { PgoutputDecoder, type Pgoutput } from './pgoutput.ts';
import { describeFailure } from './worker.ts';
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

  it('prints LSNs one way, as PostgreSQL does, whatever high half came before', () => {
    expect(lsnText(0, 0x32cdcc60)).toBe('0/32CDCC60');
    expect(lsnText(0x1a, 0xff)).toBe('1A/FF');
    expect(lsnText(0x1a, 0)).toBe('1A/0');
    expect(lsnText(0, 0x10)).toBe('0/10');
    expect(bigIntToLsn((0x1an << 32n) | 0xffffffffn)).toBe('1A/FFFFFFFF');
    expect(bigIntToLsn(lsnToBigInt('16/B374D848'))).toBe('16/B374D848');
  });
});

describe('sync failures as recorded', () => {
  it('says a bare socket error is a lost connection, and where; keeps every other message as it is', () => {
    const reset = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
    const described = describeFailure(reset, 'replication stream');
    expect(described.message).toBe('connection lost (replication stream): read ECONNRESET');
    expect((described as { code?: string }).code).toBe('ECONNRESET');
    const fatal = new Error('terminating connection due to administrator command');
    expect(describeFailure(fatal, 'apply')).toBe(fatal);
    const sql = Object.assign(new Error('duplicate key value violates unique constraint "invoices_pkey"'), { code: '23505' });
    expect(describeFailure(sql, 'apply')).toBe(sql);
    expect(describeFailure('plain', 'apply').message).toBe('plain');
  });
});

describe('pgoutput decoding', () => {
  const u8 = (n: number) => Buffer.from([n]);
  const i16 = (n: number) => Buffer.from([(n >> 8) & 255, n & 255]);
  const i32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeInt32BE(n);
    return b;
  };
  const i64 = (n: bigint) => {
    const b = Buffer.alloc(8);
    b.writeBigInt64BE(n);
    return b;
  };
  const str = (s: string) => Buffer.concat([Buffer.from(s, 'utf8'), u8(0)]);
  const lsn = (hi: number, lo: number) => Buffer.concat([i32(hi), i32(lo)]);
  const text = (v: string) => Buffer.concat([u8(0x74), i32(Buffer.byteLength(v)), Buffer.from(v, 'utf8')]);
  const msg = (...parts: Buffer[]) => Buffer.concat([Buffer.alloc(25, 0x77), ...parts]);
  const relation = msg(u8(0x52), i32(16400), str('public'), str('invoices'), u8(0x64), i16(3), u8(1), str('id'), i32(20), i32(-1), u8(0), str('note'), i32(25), i32(-1), u8(0), str('body'), i32(25), i32(-1));

  it('decodes begin and commit with LSNs as PostgreSQL prints them and times in microseconds since 1970', () => {
    const d = new PgoutputDecoder();
    const at = 1_000_000n; // a second after 2000-01-01, in protocol microseconds
    expect(d.decode(msg(u8(0x42), lsn(0, 0x32cdcc60), i64(at), i32(7)), 25)).toEqual({ tag: 'begin', commitLsn: '0/32CDCC60', commitTime: 946_684_801_000_000n, xid: 7 });
    expect(d.decode(msg(u8(0x43), u8(0), lsn(0x1a, 0xff), lsn(0x1a, 0x120), i64(at)), 25)).toMatchObject({ tag: 'commit', commitLsn: '1A/FF', commitEndLsn: '1A/120' });
  });

  it('keeps values as PostgreSQL\'s text, nulls as null, an unchanged TOAST value from the old row, and key-only rows as their key', () => {
    const d = new PgoutputDecoder();
    expect(d.decode(relation, 25)).toMatchObject({ tag: 'relation', name: 'invoices', schema: 'public', keyColumns: ['id'], replicaIdentity: 'default' });
    const insert = d.decode(msg(u8(0x49), i32(16400), u8(0x4e), i16(3), text('1'), text('2026-12-02 05:00:00.123456+00 é'), u8(0x6e)), 25);
    expect(insert).toMatchObject({ tag: 'insert', new: { id: '1', note: '2026-12-02 05:00:00.123456+00 é', body: null } });
    const update = d.decode(msg(u8(0x55), i32(16400), u8(0x4f), i16(3), text('1'), text('a'), text('long'), u8(0x4e), i16(3), text('1'), text('b'), u8(0x75)), 25) as Pgoutput.MessageUpdate;
    expect(update.new).toEqual({ id: '1', note: 'b', body: 'long' });
    expect(update.old).toEqual({ id: '1', note: 'a', body: 'long' });
    const del = d.decode(msg(u8(0x44), i32(16400), u8(0x4b), i16(3), text('9'), u8(0x6e), u8(0x6e)), 25) as Pgoutput.MessageDelete;
    expect(del.key).toEqual({ id: '9' });
    expect(del.old).toBeNull();
  });

  it('keeps a column named __proto__ as a value of the row, never as its prototype', () => {
    const d = new PgoutputDecoder();
    d.decode(msg(u8(0x52), i32(16401), str('public'), str('odd'), u8(0x64), i16(2), u8(1), str('id'), i32(20), i32(-1), u8(0), str('__proto__'), i32(25), i32(-1)), 25);
    const row = (d.decode(msg(u8(0x49), i32(16401), u8(0x4e), i16(2), text('1'), text('x')), 25) as Pgoutput.MessageInsert).new;
    expect(Object.getPrototypeOf(row)).toBeNull();
    expect(Object.keys(row)).toEqual(['id', '__proto__']);
    expect(row.__proto__).toBe('x');
    // Every other table's rows are plain objects (V8's fast shape).
    d.decode(relation, 25);
    const plain = (d.decode(msg(u8(0x49), i32(16400), u8(0x4e), i16(3), text('1'), text('a'), u8(0x6e)), 25) as Pgoutput.MessageInsert).new;
    expect(Object.getPrototypeOf(plain)).toBe(Object.prototype);
  });

  it('owns a logical message\'s bytes (the connection reuses its buffer) and refuses what it cannot read', () => {
    const d = new PgoutputDecoder();
    const raw = msg(u8(0x4d), u8(1), lsn(0, 0x10), str('strangler.heartbeat'), i32(3), Buffer.from('abc'));
    const m = d.decode(raw, 25) as Pgoutput.MessageMessage;
    raw.fill(0);
    expect(m).toMatchObject({ tag: 'message', transactional: true, messageLsn: '0/10', prefix: 'strangler.heartbeat' });
    expect(Buffer.from(m.content).toString()).toBe('abc');
    expect(() => d.decode(msg(u8(0x49), i32(99), u8(0x4e), i16(0)), 25)).toThrow(/relation 99 before its relation message/);
    expect(() => d.decode(msg(u8(0x5a)), 25)).toThrow(/unknown pgoutput message/);
    d.decode(relation, 25);
    expect(() => d.decode(msg(u8(0x49), i32(16400), u8(0x4e), i16(1), u8(0x74), i32(50), Buffer.from('short')), 25)).toThrow(/unexpected end/);
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
