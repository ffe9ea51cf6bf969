import type pg from 'pg';

/** What a monolith's database says about its tables, as `strangler init` and `plan --coupling` read it. */
export interface SchemaGraph {
  tables: Array<{ name: string; key: string[]; hasPrimaryKey: boolean; replicaIdentity: 'default' | 'full' | 'index' | 'nothing'; rows: number }>;
  foreignKeys: Array<{ name: string; table: string; columns: string[]; references: string; referencedColumns: string[] }>;
  sequences: Array<{ table: string; column: string; sequence: string; lastValue: number | null }>;
}

/** Reads the public schema: tables with their keys, foreign keys between them, sequences behind their columns. Reads only. */
export async function readSchemaGraph(client: pg.Client): Promise<SchemaGraph> {
  const tables = await client.query(
    `SELECT c.relname AS name, c.relreplident AS ident, greatest(c.reltuples, 0)::bigint AS rows,
            coalesce((SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum)) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = c.oid AND i.indisprimary), '{}') AS pk,
            coalesce((SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum)) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = c.oid AND i.indisreplident), '{}') AS ri
       FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname`,
  );
  const fks = await client.query(
    `SELECT con.conname AS name, c.relname::text AS "table", p.relname::text AS "references",
            (SELECT array_agg(a.attname::text ORDER BY k.n) FROM unnest(con.conkey) WITH ORDINALITY k(attnum, n) JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum) AS columns,
            (SELECT array_agg(a.attname::text ORDER BY k.n) FROM unnest(con.confkey) WITH ORDINALITY k(attnum, n) JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum) AS referenced
       FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_class p ON p.oid = con.confrelid
      WHERE con.contype = 'f' AND c.relnamespace = 'public'::regnamespace AND p.relnamespace = 'public'::regnamespace ORDER BY c.relname, con.conname`,
  );
  const seqs = await client.query(
    `SELECT c.relname AS "table", a.attname AS "column", s.schemaname || '.' || s.sequencename AS sequence, s.last_value::float8 AS last
       FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
       JOIN pg_sequences s ON format('%I.%I', s.schemaname, s.sequencename) = pg_get_serial_sequence(format('%I', c.relname), a.attname)
      WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') ORDER BY 1, 2`,
  );
  return {
    tables: tables.rows.map((r) => {
      const ident = ({ d: 'default', f: 'full', i: 'index', n: 'nothing' } as const)[r.ident as 'd' | 'f' | 'i' | 'n'];
      const pk: string[] = r.pk;
      const key = ident === 'index' ? (r.ri as string[]) : ident === 'nothing' ? [] : pk;
      return { name: r.name, key, hasPrimaryKey: pk.length > 0, replicaIdentity: ident, rows: Number(r.rows) };
    }),
    foreignKeys: fks.rows.map((r) => ({ name: r.name, table: r.table, columns: r.columns, references: r.references, referencedColumns: r.referenced })),
    sequences: seqs.rows.map((r) => ({ table: r.table, column: r.column, sequence: r.sequence, lastValue: r.last === null ? null : Number(r.last) })),
  };
}
