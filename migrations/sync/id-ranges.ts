import pg from 'pg';
import type { ResolvedConfig, ResolvedService } from '../../core/config/load.ts';
import { isMissingDatabase } from '../../core/databases.ts';
import { readSourceTables } from './catalog.ts';
import { buildSyncPlan, quoteIdent as q, tableProblem, type SourceTable, type TablePlan } from './plan.ts';

/**
 * Ids created on either side while both take writes (a canary) must never collide: the
 * monolith keeps its sequences, a service's generated keys come from a range above them
 * (sync.idRangeStart, 1,000,000,001 by default). This checks a service database's key
 * generators, whoever created them (the toolkit, the service's own migrations, plain SQL), and
 * says what to run, or runs it, when one could hand out an id the monolith may also use.
 */

/** How a target table's key column gets its values. */
export interface KeyGenerator {
  table: string;
  column: string;
  /** format_type of the column. */
  type: string;
  kind: 'none' | 'sequence' | 'identity';
  /** The sequence behind a nextval() default or an identity column. */
  sequence: string | null;
  minValue: bigint | null;
  /** The next value it would hand out. */
  nextValue: bigint | null;
  /** The largest key already on the target. */
  maxId: bigint | null;
}

export interface IdRangeFinding {
  table: string;
  ok: boolean;
  detail: string;
  /** The statements that give the table a disjoint range (run by --fix-sequences). */
  fix: string[];
}

const INTEGER_TYPES = new Set(['smallint', 'integer', 'bigint']);

/** Tables whose ids matter: owned (not copies), with one integer key column. */
export function generatedKeys(tables: readonly TablePlan[]): Array<{ table: TablePlan; column: string; type: string }> {
  return tables
    .filter((t) => !t.replica && t.key.length === 1)
    .map((t) => ({ table: t, column: t.columns.find((c) => c.source === t.key[0])!, type: t.columns.find((c) => c.source === t.key[0])!.type }))
    .filter((k) => INTEGER_TYPES.has(k.type))
    .map((k) => ({ table: k.table, column: k.column.target, type: k.type }));
}

/**
 * Pure: whether each generator hands out ids only at or above `start`, above everything the
 * monolith has (`legacyMax`), and the statements that make it so when not.
 */
export function idRangeFindings(generators: readonly KeyGenerator[], legacyMax: ReadonlyMap<string, bigint | null>, start: bigint, sourceTable: (target: string) => string): IdRangeFinding[] {
  return generators.map((g) => {
    const legacy = legacyMax.get(g.table) ?? null;
    const t = q(g.table);
    const c = q(g.column);
    const restart = `${start > (g.maxId ?? 0n) ? start : (g.maxId ?? 0n) + 1n}`;
    const seq = g.sequence ?? `${g.table}_${g.column}_strangler_seq`;
    const fix =
      g.kind === 'identity'
        ? [`ALTER TABLE ${t} ALTER COLUMN ${c} SET MINVALUE ${start} SET START WITH ${start} RESTART WITH ${restart};`]
        : g.kind === 'sequence'
          ? [`ALTER SEQUENCE ${seq} MINVALUE ${start} START WITH ${start} RESTART WITH ${restart};`]
          : [`CREATE SEQUENCE IF NOT EXISTS ${q(seq)} AS ${g.type === 'smallint' ? 'integer' : g.type} MINVALUE ${start} START WITH ${restart};`, `ALTER TABLE ${t} ALTER COLUMN ${c} SET DEFAULT nextval('${q(seq).replace(/'/g, "''")}');`, `ALTER SEQUENCE ${q(seq)} OWNED BY ${t}.${c};`];
    if (legacy !== null && legacy >= start) {
      return { table: g.table, ok: false, detail: `the monolith's ${sourceTable(g.table)} already has ids up to ${legacy}, into the services' range from ${start}: choose a higher sync.idRangeStart`, fix: [] };
    }
    if (g.type === 'smallint') return { table: g.table, ok: false, detail: `${g.table}.${g.column} is a smallint: no range above the monolith's fits in it; widen it (ALTER TABLE ${t} ALTER COLUMN ${c} TYPE integer)`, fix: [] };
    if (g.kind === 'none') return { table: g.table, ok: false, detail: `${g.table}.${g.column} has no default: rows the service creates need ids from a range of their own`, fix };
    if (g.minValue === null || g.minValue < start || (g.nextValue ?? 0n) < start) {
      return { table: g.table, ok: false, detail: `${g.table}.${g.column} takes ids from ${g.sequence ?? 'its identity'} at ${g.nextValue ?? '?'} (minimum ${g.minValue ?? '?'}), where the monolith's ids are: a row created on each side could get the same id`, fix };
    }
    return { table: g.table, ok: true, detail: `${g.table}.${g.column} takes ids from ${g.nextValue} (minimum ${g.minValue}); the monolith's are below ${legacy === null ? start : legacy + 1n}`, fix: [] };
  });
}

/** The key generators of the target tables, as the target's catalog says. */
export async function readKeyGenerators(target: pg.Client, keys: ReadonlyArray<{ table: TablePlan; column: string; type: string }>): Promise<KeyGenerator[]> {
  const out: KeyGenerator[] = [];
  for (const k of keys) {
    const { rows } = await target.query(
      `SELECT a.attidentity <> '' AS identity, pg_get_serial_sequence($1, $2) AS seq, pg_get_expr(d.adbin, d.adrelid) AS def
         FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = to_regclass($1) AND a.attname = $2`,
      [`public.${q(k.table.target)}`, k.column],
    );
    if (!rows[0]) continue; // the table does not exist (yet): nothing generates its ids
    const fromDefault = /nextval\('([^']+)'::regclass\)/.exec(rows[0].def ?? '')?.[1] ?? null;
    const sequence: string | null = rows[0].seq ?? fromDefault;
    let minValue: bigint | null = null;
    let nextValue: bigint | null = null;
    if (sequence) {
      const s = await target.query(`SELECT min_value::text AS min, coalesce(last_value + increment_by, start_value)::text AS next FROM pg_sequences WHERE format('%I.%I', schemaname, sequencename)::regclass = $1::regclass`, [sequence]);
      if (s.rows[0]) {
        minValue = BigInt(s.rows[0].min);
        nextValue = BigInt(s.rows[0].next);
      }
    }
    const max = await target.query(`SELECT max(${q(k.column)})::text AS m FROM ${q(k.table.target)}`);
    out.push({ table: k.table.target, column: k.column, type: k.type, kind: rows[0].identity ? 'identity' : sequence ? 'sequence' : 'none', sequence, minValue, nextValue, maxId: max.rows[0].m === null ? null : BigInt(max.rows[0].m) });
  }
  return out;
}

/**
 * The largest id the monolith itself has handed out in each of the tables (target name → max):
 * its keys below `start`, and where its own sequence stands. Keys at or above `start` are the
 * service's, copied back by the reverse sync once it took writes (a canary): counting them would
 * refuse the very state the id ranges exist for. The monolith's generator reaching `start` is
 * still seen, through its sequence.
 */
export async function readLegacyMax(source: pg.Client, keys: ReadonlyArray<{ table: TablePlan }>, start: bigint): Promise<Map<string, bigint | null>> {
  const out = new Map<string, bigint | null>();
  for (const k of keys) {
    const key = q(k.table.key[0]);
    const { rows } = await source.query(
      `SELECT (SELECT max(${key}) FROM ${q(k.table.source)} WHERE ${key} < $1::numeric)::text AS m,
              (SELECT last_value FROM pg_sequences WHERE format('%I.%I', schemaname, sequencename)::regclass = pg_get_serial_sequence($2, $3)::regclass)::text AS seq`,
      [start.toString(), `public.${q(k.table.source)}`, k.table.key[0]],
    );
    const values = [rows[0].m, rows[0].seq].filter((v): v is string => v !== null).map((v) => BigInt(v));
    out.set(k.table.target, values.length ? values.reduce((a, b) => (a > b ? a : b)) : null);
  }
  return out;
}

/**
 * A writing service's key generators against the monolith's ids, as `doctor` and the canary
 * preflight ask (sync start asks through its own plan): [] when it takes no writes or has no
 * generated key, null when its database does not exist. Tables the monolith cannot sync (no key)
 * are left to the table checks.
 */
export async function serviceIdRanges(config: ResolvedConfig, service: ResolvedService, legacy: pg.Client, catalog: ReadonlyMap<string, SourceTable>): Promise<IdRangeFinding[] | null> {
  if (service.readOnly) return [];
  const tables = service.tables.filter((t) => !t.replica && catalog.has(t.source) && !tableProblem(catalog.get(t.source), t.source, t.exclude));
  if (!tables.length) return [];
  let plan;
  try {
    plan = buildSyncPlan({ ...service, tables }, catalog as Map<string, SourceTable>, config.legacy.databaseUrl);
  } catch {
    return []; // the table checks say why
  }
  const keys = generatedKeys(plan.tables);
  if (!keys.length) return [];
  const target = new pg.Client({ connectionString: service.databaseUrl });
  try {
    await target.connect();
  } catch (err) {
    await target.end().catch(() => undefined);
    if (isMissingDatabase(err)) return null;
    throw err;
  }
  try {
    const start = BigInt(config.sync.idRangeStart);
    return idRangeFindings(await readKeyGenerators(target, keys), await readLegacyMax(legacy, keys, start), start, (t) => plan.tables.find((x) => x.target === t)?.source ?? t);
  } finally {
    await target.end().catch(() => undefined);
  }
}

/** The same, opening the monolith's database and reading its catalog (the canary preflight). */
export async function serviceIdRangesFromLegacy(config: ResolvedConfig, service: ResolvedService): Promise<IdRangeFinding[] | null> {
  const legacy = new pg.Client({ connectionString: config.legacy.databaseUrl });
  await legacy.connect();
  try {
    return await serviceIdRanges(config, service, legacy, await readSourceTables(legacy, service.tables.map((t) => t.source)));
  } finally {
    await legacy.end().catch(() => undefined);
  }
}
