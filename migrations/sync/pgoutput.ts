import { lsnText } from './lsn.ts';

/**
 * The pgoutput messages, in about the shapes pg-logical-replication gave them (the worker was
 * written against that library, which this decoder replaces). Row values are PostgreSQL's text.
 */
export namespace Pgoutput {
  export type Message = MessageBegin | MessageCommit | MessageDelete | MessageInsert | MessageMessage | MessageOrigin | MessageRelation | MessageTruncate | MessageType | MessageUpdate;
  export interface MessageBegin {
    tag: 'begin';
    commitLsn: string | null;
    /** Microseconds since 1970-01-01. */
    commitTime: bigint;
    xid: number;
  }
  export interface MessageCommit {
    tag: 'commit';
    flags: number;
    commitLsn: string | null;
    commitEndLsn: string | null;
    commitTime: bigint;
  }
  export interface MessageInsert {
    tag: 'insert';
    relation: MessageRelation;
    new: Record<string, unknown>;
  }
  /** A change of an existing row, found by its key (replica identity) or its whole old row (FULL). */
  interface ExistingRowChange {
    relation: MessageRelation;
    key: Record<string, unknown> | null;
    old: Record<string, unknown> | null;
  }
  export interface MessageUpdate extends ExistingRowChange {
    tag: 'update';
    new: Record<string, unknown>;
  }
  export interface MessageDelete extends ExistingRowChange {
    tag: 'delete';
  }
  export interface MessageMessage {
    tag: 'message';
    flags: number;
    transactional: boolean;
    messageLsn: string | null;
    prefix: string;
    content: Uint8Array;
  }
  export interface MessageOrigin {
    tag: 'origin';
    originLsn: string | null;
    originName: string;
  }
  export interface MessageRelation {
    tag: 'relation';
    relationOid: number;
    schema: string;
    name: string;
    replicaIdentity: 'default' | 'nothing' | 'full' | 'index';
    columns: RelationColumn[];
    keyColumns: string[];
    /**
     * A column is named `__proto__`: its rows are objects without a prototype (a plain object
     * would take that column's value as its prototype). Every other table's rows are plain
     * objects of one shape, which V8 reads and writes far faster than prototype-less ones.
     */
    protoColumn: boolean;
  }
  export interface RelationColumn {
    name: string;
    /** 1: part of the key. */
    flags: number;
    typeOid: number;
    typeMod: number;
    /** Known only for types the stream described (a 'type' message: user-defined types). */
    typeSchema: string | null;
    typeName: string | null;
  }
  export interface MessageTruncate {
    tag: 'truncate';
    cascade: boolean;
    restartIdentity: boolean;
    relations: MessageRelation[];
  }
  export interface MessageType {
    tag: 'type';
    typeOid: number;
    typeSchema: string;
    typeName: string;
  }
}

/** Microseconds from 1970-01-01 to 2000-01-01, the epoch of the protocol's timestamps. */
export const PG_EPOCH_US = 946_684_800_000_000n;

/** The LSN at `at`, as PostgreSQL prints it, or null for 0/0. */
function lsnAt(b: Buffer, at: number): string | null {
  const hi = b.readUInt32BE(at);
  const lo = b.readUInt32BE(at + 4);
  return hi === 0 && lo === 0 ? null : lsnText(hi, lo);
}

/** A protocol timestamp as microseconds since 1970-01-01. */
function timeAt(b: Buffer, at: number): bigint {
  return b.readBigInt64BE(at) + PG_EPOCH_US;
}

/** A cursor over one message (the decoder keeps one and moves it to each message). */
class Reader {
  b: Buffer = Buffer.alloc(0);
  p = 0;

  at(b: Buffer, at: number): this {
    this.b = b;
    this.p = at;
    return this;
  }

  u8(): number {
    if (this.p >= this.b.length) throw new Error('unexpected end of a pgoutput message');
    return this.b[this.p++];
  }

  i16(): number {
    const v = this.b.readInt16BE(this.p);
    this.p += 2;
    return v;
  }

  i32(): number {
    const v = this.b.readInt32BE(this.p);
    this.p += 4;
    return v;
  }

  string(): string {
    const end = this.b.indexOf(0, this.p);
    if (end < 0) throw new Error('unexpected end of a pgoutput message');
    const s = this.b.toString('utf8', this.p, end);
    this.p = end + 1;
    return s;
  }

  lsn(): string | null {
    const v = lsnAt(this.b, this.p);
    this.p += 8;
    return v;
  }

  time(): bigint {
    const v = timeAt(this.b, this.p);
    this.p += 8;
    return v;
  }

  bytes(n: number): Buffer {
    if (n < 0 || this.p + n > this.b.length) throw new Error('unexpected end of a pgoutput message');
    // A copy: the message waits in a queue while the connection reuses its read buffer.
    const out = Buffer.from(this.b.subarray(this.p, this.p + n));
    this.p += n;
    return out;
  }
}

/** An empty row of a relation: a plain object, unless a column is named `__proto__` (see protoColumn). */
function newRow(relation: Pgoutput.MessageRelation): Record<string, unknown> {
  return relation.protoColumn ? Object.create(null) : {};
}

const IDENTITY: Record<number, Pgoutput.MessageRelation['replicaIdentity']> = { 0x64: 'default', 0x6e: 'nothing', 0x66: 'full', 0x69: 'index' };

/**
 * Decodes pgoutput (protocol version 1) messages, every value kept as PostgreSQL's text
 * (pg-logical-replication, used before, parsed them with pg's global type parsers: a
 * timestamptz lost its microseconds, numerics and arrays changed form) and LSNs in
 * PostgreSQL's own form. The sync worker decodes every change of the source through this, so
 * it does as little as it can: one pass over the bytes, no reader object per message beyond
 * one cursor, no LSN written one way and then normalised.
 * https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
 */
export class PgoutputDecoder {
  readonly #relations = new Map<number, Pgoutput.MessageRelation>();
  readonly #types = new Map<number, { typeSchema: string; typeName: string }>();
  readonly #reader = new Reader();

  /** One message: `b` from `at` (the byte after XLogData's 25-byte header) to its end. */
  decode(b: Buffer, at = 0): Pgoutput.Message {
    const r = this.#reader.at(b, at + 1);
    switch (b[at]) {
      case 0x42 /* B */:
        return { tag: 'begin', commitLsn: r.lsn(), commitTime: r.time(), xid: r.i32() };
      case 0x43 /* C */: {
        const flags = r.u8();
        return { tag: 'commit', flags, commitLsn: r.lsn(), commitEndLsn: r.lsn(), commitTime: r.time() };
      }
      case 0x49 /* I */: {
        const relation = this.#relation(r.i32());
        r.u8(); // 'N'
        return { tag: 'insert', relation, new: this.#tuple(r, relation) };
      }
      case 0x55 /* U */: {
        const relation = this.#relation(r.i32());
        const kind = r.u8();
        if (kind === 0x4e /* N */) return { tag: 'update', relation, key: null, old: null, new: this.#tuple(r, relation) };
        if (kind === 0x4b /* K */) {
          const key = this.#keyTuple(r, relation);
          r.u8(); // 'N'
          return { tag: 'update', relation, key, old: null, new: this.#tuple(r, relation) };
        }
        if (kind === 0x4f /* O */) {
          const old = this.#tuple(r, relation);
          r.u8(); // 'N'
          return { tag: 'update', relation, key: null, old, new: this.#tuple(r, relation, old) };
        }
        throw new Error(`unknown pgoutput update part ${String.fromCharCode(kind)}`);
      }
      case 0x44 /* D */: {
        const relation = this.#relation(r.i32());
        const kind = r.u8();
        if (kind === 0x4b /* K */) return { tag: 'delete', relation, key: this.#keyTuple(r, relation), old: null };
        if (kind === 0x4f /* O */) return { tag: 'delete', relation, key: null, old: this.#tuple(r, relation) };
        throw new Error(`unknown pgoutput delete part ${String.fromCharCode(kind)}`);
      }
      case 0x52 /* R */:
        return this.#relationMessage(r);
      case 0x59 /* Y */: {
        const typeOid = r.i32();
        const typeSchema = r.string();
        const typeName = r.string();
        this.#types.set(typeOid, { typeSchema, typeName });
        return { tag: 'type', typeOid, typeSchema, typeName };
      }
      case 0x4f /* O */:
        return { tag: 'origin', originLsn: r.lsn(), originName: r.string() };
      case 0x54 /* T */: {
        const n = r.i32();
        const flags = r.u8();
        const relations = Array.from({ length: n }, () => this.#relation(r.i32()));
        return { tag: 'truncate', cascade: Boolean(flags & 1), restartIdentity: Boolean(flags & 2), relations };
      }
      case 0x4d /* M */: {
        const flags = r.u8();
        const messageLsn = r.lsn();
        const prefix = r.string();
        return { tag: 'message', flags, transactional: Boolean(flags & 1), messageLsn, prefix, content: r.bytes(r.i32()) };
      }
      default:
        throw new Error(`unknown pgoutput message ${JSON.stringify(String.fromCharCode(b[at]))}`);
    }
  }

  #relation(oid: number): Pgoutput.MessageRelation {
    const relation = this.#relations.get(oid);
    if (!relation) throw new Error(`a pgoutput change of relation ${oid} before its relation message`);
    return relation;
  }

  #relationMessage(r: Reader): Pgoutput.MessageRelation {
    const relationOid = r.i32();
    const schema = r.string();
    const name = r.string();
    const ident = r.u8();
    const replicaIdentity = IDENTITY[ident];
    if (!replicaIdentity) throw new Error(`unknown replica identity ${String.fromCharCode(ident)}`);
    const columns = Array.from({ length: r.i16() }, (): Pgoutput.RelationColumn => {
      const flags = r.u8();
      const columnName = r.string();
      const typeOid = r.i32();
      const typeMod = r.i32();
      const type = this.#types.get(typeOid);
      return { flags, name: columnName, typeOid, typeMod, typeSchema: type?.typeSchema ?? null, typeName: type?.typeName ?? null };
    });
    const message: Pgoutput.MessageRelation = { tag: 'relation', relationOid, schema, name, replicaIdentity, columns, keyColumns: columns.filter((c) => c.flags & 1).map((c) => c.name), protoColumn: columns.some((c) => c.name === '__proto__') };
    this.#relations.set(relationOid, message);
    return message;
  }

  /** A row: column name → text, null, or (unchanged TOAST) the old row's value or undefined. */
  #tuple(r: Reader, relation: Pgoutput.MessageRelation, unchanged?: Record<string, unknown>): Record<string, unknown> {
    const n = r.i16();
    const { columns } = relation;
    const b = r.b;
    const tuple = newRow(relation);
    for (let i = 0; i < n; i++) {
      const name = columns[i].name;
      const kind = b[r.p++];
      if (kind === 0x74 /* t */) {
        const len = b.readInt32BE(r.p);
        const start = r.p + 4;
        r.p = start + len;
        if (r.p > b.length) throw new Error('unexpected end of a pgoutput message');
        tuple[name] = b.toString('utf8', start, r.p);
      } else if (kind === 0x6e /* n */) tuple[name] = null;
      else if (kind === 0x75 /* u */) tuple[name] = unchanged?.[name];
      else if (kind === 0x62 /* b */) tuple[name] = r.bytes(r.i32());
      else throw new Error(`unknown pgoutput column kind ${String.fromCharCode(kind)}`);
    }
    return tuple;
  }

  /** A key-only row: the key columns' values (the others are sent as nulls). */
  #keyTuple(r: Reader, relation: Pgoutput.MessageRelation): Record<string, unknown> {
    const tuple = this.#tuple(r, relation);
    const key = newRow(relation);
    for (const k of relation.keyColumns) key[k] = tuple[k] === null ? undefined : tuple[k];
    return key;
  }
}
