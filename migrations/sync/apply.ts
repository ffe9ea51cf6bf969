import { createHash } from 'node:crypto';
import { quoteIdent as q, type TablePlan } from './plan.ts';

/** A decoded row: column → text value as PostgreSQL printed it, null, or undefined for "unchanged TOAST". */
export type Tuple = Record<string, string | null | undefined>;

export interface Statement {
  sql: string;
  /** Text values; an array for a parameter typed as an array. */
  params: Array<string | null | Array<string | null>>;
  /** Prepared under this name (once per connection): for statements whose text repeats. */
  name?: string;
}

/**
 * Pure: the target statement for one decoded change, through the table's column mapping.
 * Values travel as text in PostgreSQL's own output format and are parsed by the target column's
 * type, so numeric, timestamptz (microseconds), jsonb, bytea and arrays arrive exactly.
 */
export function insertStatement(table: TablePlan, row: Tuple): Statement {
  const cols = table.columns.filter((c) => row[c.source] !== undefined);
  const keyTargets = table.key.map((k) => q(table.columns.find((c) => c.source === k)!.target));
  const nonKey = cols.filter((c) => !table.key.includes(c.source));
  // Upsert: re-applying an insert (a resend after a crash between apply and acknowledge) is harmless.
  const update = nonKey.length ? `DO UPDATE SET ${nonKey.map((c) => `${q(c.target)} = excluded.${q(c.target)}`).join(', ')}` : 'DO NOTHING';
  return {
    sql: `INSERT INTO ${q(table.target)} (${cols.map((c) => q(c.target)).join(', ')}) VALUES (${cols.map((_, i) => `$${i + 1}`).join(', ')}) ON CONFLICT (${keyTargets.join(', ')}) ${update}`,
    params: cols.map((c) => row[c.source] as string | null),
  };
}

function keyOf(table: TablePlan, key: Tuple | null, fallback: Tuple): Array<string | null> {
  return table.key.map((k) => {
    const v = key && key[k] !== undefined ? key[k] : fallback[k];
    if (v === undefined) throw new Error(`change to "${table.source}" carries no value for key column "${k}"`);
    return v;
  });
}

function whereKey(table: TablePlan, offset: number): string {
  return table.key.map((k, i) => `${q(table.columns.find((c) => c.source === k)!.target)} = $${offset + i + 1}`).join(' AND ');
}

/** UPDATE by the old key (a key change moves the row); unchanged TOAST columns are left as they are. */
export function updateStatement(table: TablePlan, oldKey: Tuple | null, row: Tuple): Statement {
  const cols = table.columns.filter((c) => row[c.source] !== undefined);
  const params = cols.map((c) => row[c.source] as string | null);
  return {
    sql: `UPDATE ${q(table.target)} SET ${cols.map((c, i) => `${q(c.target)} = $${i + 1}`).join(', ')} WHERE ${whereKey(table, cols.length)}`,
    params: [...params, ...keyOf(table, oldKey, row)],
  };
}

export function deleteStatement(table: TablePlan, key: Tuple): Statement {
  return { sql: `DELETE FROM ${q(table.target)} WHERE ${whereKey(table, 0)}`, params: keyOf(table, key, key) };
}

/** Whether an update carries every column (so a missing target row can be re-created from it). */
export function isComplete(table: TablePlan, row: Tuple): boolean {
  return table.columns.every((c) => row[c.source] !== undefined);
}

/** One INSERT for a run of inserted rows with the same columns (far fewer round trips than one per row). */
export function insertManyStatement(table: TablePlan, rows: Tuple[]): Statement {
  if (rows.length === 1) return insertStatement(table, rows[0]);
  const cols = table.columns.filter((c) => rows[0][c.source] !== undefined);
  const keyTargets = table.key.map((k) => q(table.columns.find((c) => c.source === k)!.target));
  const nonKey = cols.filter((c) => !table.key.includes(c.source));
  const update = nonKey.length ? `DO UPDATE SET ${nonKey.map((c) => `${q(c.target)} = excluded.${q(c.target)}`).join(', ')}` : 'DO NOTHING';
  const params: Array<string | null> = [];
  const values = rows.map((row) => `(${cols.map((c) => (params.push(row[c.source] as string | null), `$${params.length}`)).join(', ')})`);
  return { sql: `INSERT INTO ${q(table.target)} (${cols.map((c) => q(c.target)).join(', ')}) VALUES ${values.join(', ')} ON CONFLICT (${keyTargets.join(', ')}) ${update}`, params };
}

/** One DELETE for a run of deleted keys. */
export function deleteManyStatement(table: TablePlan, keys: Tuple[]): Statement {
  if (keys.length === 1) return deleteStatement(table, keys[0]);
  const keyCols = table.key.map((k) => q(table.columns.find((c) => c.source === k)!.target));
  const params: Array<string | null> = [];
  const tuples = keys.map((key) => `(${table.key.map((k) => (params.push(key[k] as string | null), `$${params.length}`)).join(', ')})`);
  return { sql: `DELETE FROM ${q(table.target)} WHERE (${keyCols.join(', ')}) IN (${tuples.join(', ')})`, params };
}

/** Same columns present (a run of inserts can only be batched if every row carries the same set). */
export function sameShape(a: Tuple, b: Tuple): boolean {
  for (const k in a) if ((a[k] === undefined) !== (b[k] === undefined)) return false;
  return true;
}

/** A value in COPY's text format (PostgreSQL's text output, with COPY's escapes; NULL is \N). */
function copyValue(v: string | null | undefined): string {
  if (v === null || v === undefined) return '\\N';
  return v.replace(/[\\\n\r\t]/g, (c) => (c === '\\' ? '\\\\' : c === '\n' ? '\\n' : c === '\r' ? '\\r' : '\\t'));
}

/** COPY text lines for a run of inserted rows (faster than INSERT for large runs). */
export function copyRows(table: TablePlan, rows: Tuple[]): { sql: string; data: string } {
  const cols = table.columns.filter((c) => rows[0][c.source] !== undefined);
  const data = rows.map((row) => cols.map((c) => copyValue(row[c.source])).join('\t')).join('\n');
  return { sql: `COPY ${q(table.target)} (${cols.map((c) => q(c.target)).join(', ')}) FROM STDIN`, data: `${data}\n` };
}

/** The target column of a source column (every plan column has one). */
function targetOf(table: TablePlan, source: string): string {
  return table.columns.find((c) => c.source === source)!.target;
}

/** The type a parameter is cast to: the column's own type, so VALUES lists compare and assign as the column does. */
function typeOf(table: TablePlan, source: string): string {
  return table.columns.find((c) => c.source === source)!.type;
}

/** Parameters one statement may carry (PostgreSQL's limit is 65,535). */
export const MAX_PARAMS = 60_000;

/**
 * One UPDATE for a run of updated rows with the same columns and unchanged keys, at most one
 * row per key (the caller keeps the last change of each key: the same rows end the same).
 * RETURNING the keys it found, so rows missing on the target can be re-created.
 */
export function updateManyStatement(table: TablePlan, rows: Tuple[]): Statement {
  if (rows.length === 0) throw new Error('updateManyStatement needs at least one row');
  const cols = table.columns.filter((c) => rows[0][c.source] !== undefined);
  const params: Array<string | null> = [];
  const values = rows.map((row) => `(${cols.map((c) => (params.push(row[c.source] as string | null), `$${params.length}::${c.type}`)).join(', ')})`);
  const alias = cols.map((_, i) => `__v${i}`);
  const index = new Map(cols.map((c, i) => [c.source, alias[i]]));
  const set = cols.filter((c) => !table.key.includes(c.source)).map((c) => `${q(c.target)} = __v.${index.get(c.source)}`);
  const where = table.key.map((k) => `__t.${q(targetOf(table, k))} = __v.${index.get(k)}`).join(' AND ');
  return {
    sql: `UPDATE ${q(table.target)} AS __t SET ${set.join(', ')} FROM (VALUES ${values.join(', ')}) AS __v(${alias.join(', ')}) WHERE ${where} RETURNING ${table.key.map((k, i) => `__t.${q(targetOf(table, k))}::text AS __k${i}`).join(', ')}`,
    params,
  };
}

/**
 * The conflict check of a run of changes: each (key, source commit time) pair whose target row
 * was committed later by someone else. The rows are locked first (FOR UPDATE), then their
 * commit time read, so a local write still in progress is waited for and seen instead of being
 * overwritten once it commits. Rows this pipeline wrote itself (its replication origin) are
 * never a conflict: their commit time is a source's, not a local write's.
 * Returns per conflicting pair its index in `keys`, and both commit times.
 */
export function conflictCheckStatement(table: TablePlan, keys: Tuple[], commitTimesUs: bigint[], ownOrigin: number | null): Statement {
  const keyCols = table.key.map((k) => q(targetOf(table, k)));
  const alias = table.key.map((_, i) => `__c${i}`);
  const names = `__v(${[...alias, '__i', '__us'].join(', ')})`;
  let source: string;
  let params: Statement['params'];
  let generic = false;
  if (table.key.some((k) => typeOf(table, k).endsWith(']'))) {
    // unnest() would flatten an array key: a VALUES list instead (planned each time).
    const flat: Array<string | null> = [];
    const values = keys.map((key, i) => {
      const cells = table.key.map((k) => (flat.push(key[k] as string | null), `$${flat.length}::${typeOf(table, k)}`));
      flat.push(String(i));
      const at = `$${flat.length}::int`;
      flat.push(commitTimesUs[i].toString());
      return `(${[...cells, at, `$${flat.length}::bigint`].join(', ')})`;
    });
    source = `VALUES ${values.join(', ')}`;
    params = flat;
  } else {
    // Arrays, prepared, generic plan: index probes per key (see writeUnlessLaterStatement).
    source = `SELECT * FROM unnest(${[...table.key.map((k, i) => `$${i + 1}::${typeOf(table, k)}[]`), `$${table.key.length + 1}::int[]`, `$${table.key.length + 2}::bigint[]`].join(', ')})`;
    params = [...table.key.map((k) => keys.map((key) => key[k] as string | null)), keys.map((_, i) => String(i)), commitTimesUs.map(String)];
    generic = true;
  }
  const ts = `(timestamptz 'epoch' + __v.__us * interval '1 microsecond')`;
  const notOwn = ownOrigin === null ? '' : ` AND (pg_xact_commit_timestamp_origin(__l.__x)).roident IS DISTINCT FROM ${Number(ownOrigin)}`;
  const sql = `WITH ${names} AS (${source}),
          __l AS (SELECT ${keyCols.map((c, i) => `${c} AS ${alias[i]}`).join(', ')}, xmin AS __x FROM ${q(table.target)} WHERE (${keyCols.join(', ')}) IN (SELECT ${alias.join(', ')} FROM __v) FOR UPDATE)
          SELECT __v.__i, pg_xact_commit_timestamp(__l.__x)::text AS local_at, ${ts}::text AS source_at
            FROM __l JOIN __v ON ${alias.map((a) => `__l.${a} = __v.${a}`).join(' AND ')}
           WHERE pg_xact_commit_timestamp(__l.__x) > ${ts}${notOwn}`;
  return generic ? { sql, params, name: preparedName(sql) } : { sql, params };
}

/** A prepared statement's name: its text's, so a statement is prepared once per connection and shape. */
function preparedName(sql: string): string {
  return `strangler_${createHash('sha1').update(sql).digest('hex').slice(0, 20)}`;
}

/** The key of a row as one string (for sets and maps of keys). */
export function keyString(table: TablePlan, row: Tuple): string {
  // Once per change of the stream: a one-column key (the common case) without an array.
  if (table.key.length === 1) return String(row[table.key[0]]);
  return table.key.map((k) => String(row[k])).join('\u0000');
}

/**
 * The condition "no other writer committed this target row (`__t`) later than the source
 * change (`__v.__us`)": the negation of conflictCheckStatement's. A row without a commit
 * time (older than track_commit_timestamp, or written earlier in this transaction) and a row
 * this pipeline wrote itself (its origin) are never a conflict, as there.
 */
function notLaterLocally(ownOrigin: number | null): string {
  const local = 'pg_xact_commit_timestamp(__t.xmin)';
  const notOwn = ownOrigin === null ? '' : ` AND (pg_xact_commit_timestamp_origin(__t.xmin)).roident IS DISTINCT FROM ${Number(ownOrigin)}`;
  return `NOT coalesce(${local} > (timestamptz 'epoch' + __v.__us * interval '1 microsecond')${notOwn}, false)`;
}

/**
 * The conflict check folded into the write, for changes of existing rows: one UPDATE (rows of
 * one shape, one per key, keys unchanged) or DELETE of the rows that no later local write
 * touched, RETURNING the keys it wrote. In READ COMMITTED a row another transaction is writing
 * is waited for and the condition evaluated again on its new version, so a local write in
 * progress is seen, as conflictCheckStatement's FOR UPDATE sees it; one statement, one row
 * lock instead of a lock, a check and a second write. A key not returned is either missing on
 * the target or in conflict: the caller sorts those out the slow way.
 * `commitTimesUs[i]`: the earliest source commit time of row i's changes (no conflict with the
 * earliest means none with any later one).
 */
export function writeUnlessLaterStatement(table: TablePlan, kind: 'update' | 'delete', rows: Tuple[], commitTimesUs: bigint[], ownOrigin: number | null): Statement {
  if (rows.length === 0) throw new Error('writeUnlessLaterStatement needs at least one row');
  const cols = kind === 'delete' ? table.key.map((k) => table.columns.find((c) => c.source === k)!) : table.columns.filter((c) => rows[0][c.source] !== undefined);
  const alias = cols.map((_, i) => `__v${i}`);
  const index = new Map(cols.map((c, i) => [c.source, alias[i]]));
  const where = table.key.map((k) => `__t.${q(targetOf(table, k))} = __v.${index.get(k)}`).join(' AND ');
  const names = `__v(${[...alias, '__us'].join(', ')})`;
  let from: string;
  let params: Statement['params'];
  let generic = false;
  if (cols.some((c) => c.type.endsWith(']'))) {
    // unnest() would flatten an array column's values: a VALUES list instead (planned each time).
    params = [];
    const flat = params as Array<string | null>;
    const values = rows.map((row, i) => `(${[...cols.map((c) => (flat.push(row[c.source] as string | null), `$${flat.length}::${c.type}`)), (flat.push(commitTimesUs[i].toString()), `$${flat.length}::bigint`)].join(', ')})`);
    from = `(VALUES ${values.join(', ')}) AS ${names}`;
  } else {
    // One array per column: the same text for any number of rows, so the statement is prepared
    // once per connection and its generic plan (the caller's transaction forces one) probes
    // the key's index row by row. Planned for the actual count, a thousand keys on a table of
    // a hundred thousand rows get a hash join over the whole table: several times slower.
    params = [...cols.map((c) => rows.map((row) => row[c.source] as string | null)), commitTimesUs.map(String)];
    from = `unnest(${[...cols.map((c, i) => `$${i + 1}::${c.type}[]`), `$${cols.length + 1}::bigint[]`].join(', ')}) AS ${names}`;
    generic = true;
  }
  const returning = `RETURNING ${table.key.map((k, i) => `__t.${q(targetOf(table, k))}::text AS __k${i}`).join(', ')}`;
  let sql: string;
  if (kind === 'delete') sql = `DELETE FROM ${q(table.target)} AS __t USING ${from} WHERE ${where} AND ${notLaterLocally(ownOrigin)} ${returning}`;
  else {
    const set = cols.filter((c) => !table.key.includes(c.source)).map((c) => `${q(c.target)} = __v.${index.get(c.source)}`);
    // A key-only table has nothing to set: the key itself, to lock and return the row.
    const assignments = set.length ? set : [`${q(targetOf(table, table.key[0]))} = __t.${q(targetOf(table, table.key[0]))}`];
    sql = `UPDATE ${q(table.target)} AS __t SET ${assignments.join(', ')} FROM ${from} WHERE ${where} AND ${notLaterLocally(ownOrigin)} ${returning}`;
  }
  return generic ? { sql, params, name: preparedName(sql) } : { sql, params };
}
