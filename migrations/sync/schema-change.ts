/**
 * Pure: what a pipeline does when a source table's shape, as pgoutput's relation message gives
 * it at that point of the stream, is not the shape it has been applying. Logical replication
 * carries no DDL; the relation message is the only place a change shows, and it is there
 * before the first row written in the new shape.
 */

/** A source column as the pipeline applies it (kept with the pipeline's state, per table). */
export interface ShapeColumn {
  source: string;
  target: string;
  /** The source type, as format_type prints it. */
  type: string;
  /** mapped: its values are applied; ignored: a column added on the source that the policy leaves out. */
  status: 'mapped' | 'ignored';
}

/** A column of a relation message, with its type's name resolved. */
export interface RelationColumn {
  name: string;
  type: string;
  /** A type outside pg_catalog (enum, domain, composite): another database may not have it. */
  userDefined: boolean;
}

export type NewColumnPolicy = 'ignore' | 'add' | 'stop';

export interface TableRules {
  /** Source column → target column, renamed ones only. */
  columns: Record<string, string>;
  exclude: string[];
  newColumn: NewColumnPolicy;
}

/** What was seen, for the pipeline's record and `strangler sync status`. */
export interface SchemaChange {
  kind: 'new-column' | 'column-gone' | 'type-changed' | 'renamed';
  column: string;
  detail: string;
  /** What the pipeline did. */
  action: 'ignored' | 'added' | 'widened' | 'applied' | 'stopped';
}

/** A statement on the target the change needs, in the transaction that applies it. */
export type TargetAction = { kind: 'add-column'; target: string; type: string } | { kind: 'alter-type'; target: string; type: string };

export interface ShapeDecision {
  /** The shape to apply from here on (when not stopped). */
  shape: ShapeColumn[];
  changes: SchemaChange[];
  actions: TargetAction[];
  /** Why the pipeline must stop before this change, with the fix; null when it may go on. */
  stop: string | null;
}

const NUMERIC = /^numeric\((\d+),(\d+)\)$/;
const LENGTH = /^(character varying|bit varying)\((\d+)\)$/;
const TIME_PRECISION = /^(timestamp|time)\((\d)\)( with(out)? time zone)$/;
const INTEGER_WIDTH: Record<string, number> = { smallint: 1, integer: 2, bigint: 3 };

/**
 * Whether every value of type `from` fits type `to` unchanged (a change the target can take by
 * widening its column, or as it is when it is already that wide).
 */
export function widens(from: string, to: string): boolean {
  if (from === to) return true;
  if (to === 'text' && (from === 'character varying' || LENGTH.test(from) || /^character\(\d+\)$/.test(from))) return from !== 'bit varying';
  const lf = LENGTH.exec(from);
  const lt = LENGTH.exec(to);
  if (lf && lt) return lf[1] === lt[1] && Number(lt[2]) >= Number(lf[2]);
  if (lf && to === lf[1]) return true; // varchar(n) → varchar
  const nf = NUMERIC.exec(from);
  const nt = NUMERIC.exec(to);
  if (nf && nt) return Number(nt[2]) >= Number(nf[2]) && Number(nt[1]) - Number(nt[2]) >= Number(nf[1]) - Number(nf[2]);
  if ((nf || from in INTEGER_WIDTH) && to === 'numeric') return true;
  if (from in INTEGER_WIDTH && to in INTEGER_WIDTH) return INTEGER_WIDTH[to] >= INTEGER_WIDTH[from];
  if (from === 'real' && to === 'double precision') return true;
  const tf = TIME_PRECISION.exec(from);
  const tt = TIME_PRECISION.exec(to);
  if (tf && tt) return tf[1] === tt[1] && tf[3] === tt[3] && Number(tt[2]) >= Number(tf[2]);
  if (tf && to === `${tf[1]}${tf[3]}`) return true; // timestamp(3) → timestamp (6 digits)
  return false;
}

/**
 * Compares a relation message with the shape applied so far. `targetTypes` is the target
 * table's columns and types now; `alterTarget` says whether the pipeline may change the target
 * table (never the monolith's, in a reverse sync).
 */
export function decideShape(table: string, previous: ShapeColumn[], relation: RelationColumn[], rules: TableRules, targetTypes: Map<string, string>, alterTarget: boolean, service: string): ShapeDecision {
  const changes: SchemaChange[] = [];
  const actions: TargetAction[] = [];
  const stops: string[] = [];
  const before = new Map(previous.map((c) => [c.source, c]));
  const present = new Set(relation.map((c) => c.name));
  const shape: ShapeColumn[] = [];
  const fed = new Set<string>();
  const mapHint = (name: string, target: string) => `map it in strangler.yaml (services.${service}.tables, source ${table}: columns: { ${name}: ${target} }) or exclude it, then run: strangler sync resume ${service}`;

  for (const col of relation) {
    if (rules.exclude.includes(col.name)) continue;
    const target = rules.columns[col.name] ?? col.name;
    const old = before.get(col.name);
    if (old?.status === 'ignored' && old.target === target && !targetTypes.has(target)) {
      shape.push({ ...old, type: col.type });
      continue;
    }
    const targetType = targetTypes.get(target);
    if (!old) {
      const renamedFrom = previous.find((p) => p.status === 'mapped' && p.target === target && !present.has(p.source));
      if (renamedFrom && targetType !== undefined) {
        // The mapping names this column for a target column whose source went away: a rename.
        changes.push({ kind: 'renamed', column: col.name, detail: `${renamedFrom.source} is now ${col.name}, applied to ${target} as the mapping says`, action: 'applied' });
      } else if (targetType === undefined) {
        // A column the target does not have: the new-column policy.
        if (rules.newColumn === 'stop') {
          stops.push(`legacy table ${table} has a new column ${col.name} (${col.type}) and the policy for new columns is stop; ${mapHint(col.name, '<target column>')}, or set newColumn: ignore or add`);
          changes.push({ kind: 'new-column', column: col.name, detail: col.type, action: 'stopped' });
          continue;
        }
        if (rules.newColumn === 'add' && alterTarget && !col.userDefined) {
          actions.push({ kind: 'add-column', target, type: col.type });
          changes.push({ kind: 'new-column', column: col.name, detail: `${col.type}, added to the target as ${target}`, action: 'added' });
          shape.push({ source: col.name, target, type: col.type, status: 'mapped' });
          fed.add(target);
          continue;
        }
        const why = rules.newColumn === 'add' ? (col.userDefined ? ` (its type ${col.type} is not built in: create it on the target and map the column)` : ' (the target is the monolith: its schema is never changed)') : '';
        changes.push({ kind: 'new-column', column: col.name, detail: `${col.type}, not carried${why}`, action: 'ignored' });
        shape.push({ source: col.name, target, type: col.type, status: 'ignored' });
        continue;
      }
    }
    // A mapped column: is the target's type wide enough for the source's (new) type?
    if (old && old.type !== col.type) {
      const detail = `${old.type} → ${col.type}`;
      if (targetType !== undefined && widens(col.type, targetType)) {
        // The target's column holds every value of the new type as it is (it was made so).
        changes.push({ kind: 'type-changed', column: col.name, detail, action: 'applied' });
      } else if (!widens(old.type, col.type)) {
        stops.push(
          alterTarget
            ? `column ${col.name} of ${table} changed type from ${old.type} to ${col.type}, which ${target} (${targetType ?? '?'}) may not hold; copy the table again with the column typed as the source's: strangler sync resume ${service} --recopy ${table} (or exclude the column and resume)`
            : `column ${col.name} of ${table} changed type from ${old.type} to ${col.type}, which the monolith's ${target} (${targetType ?? '?'}) may not hold; change it on the monolith to a type that holds both, or exclude the column, then run: strangler sync resume ${service} --reverse`,
        );
        changes.push({ kind: 'type-changed', column: col.name, detail, action: 'stopped' });
        continue;
      } else if (!alterTarget) {
        stops.push(`column ${col.name} of ${table} widened from ${old.type} to ${col.type} and the monolith's ${target} is ${targetType}; widen it there (ALTER TABLE ${table} ALTER COLUMN ${target} TYPE ${col.type}), then run: strangler sync resume ${service} --reverse`);
        changes.push({ kind: 'type-changed', column: col.name, detail, action: 'stopped' });
        continue;
      } else {
        actions.push({ kind: 'alter-type', target, type: col.type });
        changes.push({ kind: 'type-changed', column: col.name, detail, action: 'widened' });
      }
    }
    if (targetType === undefined) {
      stops.push(`column ${col.name} of ${table} is applied to ${target}, which the target table no longer has; add it back, or ${mapHint(col.name, '<existing target column>')}`);
      changes.push({ kind: 'column-gone', column: target, detail: `the target's ${target} is missing`, action: 'stopped' });
      continue;
    }
    shape.push({ source: col.name, target, type: col.type, status: 'mapped' });
    fed.add(target);
  }
  for (const old of previous) {
    if (old.status !== 'mapped' || present.has(old.source) || fed.has(old.target) || rules.exclude.includes(old.source)) continue;
    // A column the pipeline filled is gone: dropped or renamed (a rename looks like a drop and
    // an add). Applying on would leave the target column stale without a word: stop.
    stops.push(`column ${old.source} of ${table} is gone (dropped, or renamed: a rename looks like a drop and an add) and ${old.target} would no longer be kept up to date; if it was renamed, ${mapHint('<new name>', old.target)}; if it was dropped, exclude it (exclude: [${old.source}]) and resume`);
    changes.push({ kind: 'column-gone', column: old.source, detail: `applied to ${old.target}`, action: 'stopped' });
  }
  return { shape, changes, actions, stop: stops.length ? stops.join('; ') : null };
}
