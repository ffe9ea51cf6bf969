import type pg from 'pg';
import type { SourceTable } from './plan.ts';

/** Reads the legacy catalog for the named tables (public schema): columns, types, keys, replica identity. */
export async function readSourceTables(client: pg.Client | pg.PoolClient, names: string[]): Promise<Map<string, SourceTable>> {
  const { rows } = await client.query(
    `SELECT c.relname AS table, c.relreplident AS ident,
            a.attname AS column, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
            tn.nspname NOT IN ('pg_catalog', 'information_schema') AS user_defined,
            pk.pos AS pk_pos, ri.pos AS ri_pos, a.attnum
       FROM pg_class c
       JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
       JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
       JOIN pg_type t ON t.oid = a.atttypid
       JOIN pg_namespace tn ON tn.oid = CASE WHEN t.typelem <> 0 AND t.typlen = -1 THEN (SELECT typnamespace FROM pg_type e WHERE e.oid = t.typelem) ELSE t.typnamespace END
       LEFT JOIN LATERAL (SELECT array_position(i.indkey::int2[], a.attnum) AS pos FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) pk ON pk.pos IS NOT NULL
       LEFT JOIN LATERAL (SELECT array_position(i.indkey::int2[], a.attnum) AS pos FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident) ri ON ri.pos IS NOT NULL
      WHERE c.relkind = 'r' AND c.relname = ANY($1)
      ORDER BY c.relname, a.attnum`,
    [names],
  );
  const out = new Map<string, SourceTable>();
  const keys = new Map<string, { pk: Array<{ pos: number; name: string }>; ri: Array<{ pos: number; name: string }> }>();
  for (const r of rows) {
    let t = out.get(r.table);
    if (!t) {
      const ident = ({ d: 'default', f: 'full', i: 'index', n: 'nothing' } as const)[r.ident as 'd' | 'f' | 'i' | 'n'];
      t = { name: r.table, columns: [], keyColumns: [], replicaIdentity: ident, hasPrimaryKey: false };
      out.set(r.table, t);
      keys.set(r.table, { pk: [], ri: [] });
    }
    t.columns.push({ name: r.column, type: r.type, notNull: r.not_null, userDefined: r.user_defined });
    if (r.pk_pos !== null) {
      t.hasPrimaryKey = true;
      keys.get(r.table)!.pk.push({ pos: r.pk_pos, name: r.column });
    }
    if (r.ri_pos !== null) keys.get(r.table)!.ri.push({ pos: r.ri_pos, name: r.column });
  }
  for (const [name, t] of out) {
    // The key replication uses: the primary key with the default identity, the identity index otherwise.
    const k = keys.get(name)!;
    const chosen = t.replicaIdentity === 'default' ? k.pk : t.replicaIdentity === 'index' ? k.ri : t.replicaIdentity === 'full' && t.hasPrimaryKey ? k.pk : [];
    t.keyColumns = chosen.sort((a, b) => a.pos - b.pos).map((c) => c.name);
  }
  return out;
}
