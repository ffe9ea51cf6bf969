import type { ResolvedService } from '../../core/config/load.ts';
import { StranglerError } from '../../core/errors.ts';

/** A source column as the legacy catalog describes it. */
export interface SourceColumn {
  name: string;
  /** format_type(atttypid, atttypmod), e.g. "numeric(12,2)". */
  type: string;
  notNull: boolean;
  /** The type lives outside pg_catalog (enum, domain, composite): the target may not have it. */
  userDefined: boolean;
}

/** What the legacy catalog says about one table. */
export interface SourceTable {
  name: string;
  columns: SourceColumn[];
  /** Primary key columns, else the replica identity index columns, else []. */
  keyColumns: string[];
  replicaIdentity: 'default' | 'full' | 'index' | 'nothing';
  hasPrimaryKey: boolean;
}

export interface ColumnPlan {
  source: string;
  target: string;
  type: string;
  notNull: boolean;
}

export interface TablePlan {
  source: string;
  target: string;
  columns: ColumnPlan[];
  /** Key columns by source name, in key order. */
  key: string[];
  replica: boolean;
  /** The mapping's own words, for shapes the source takes later (schema-change.ts). */
  rules: TableRules;
}

/** How a table's columns map, and the policies for changes of its shape. */
export interface TableRules {
  /** Source column → target column, renamed ones only. */
  columns: Record<string, string>;
  exclude: string[];
  newColumn: 'ignore' | 'add' | 'stop';
  truncate: 'apply' | 'stop';
}

export interface SyncPlan {
  service: string;
  direction: Direction;
  /** A feed's source: the service owning the tables this service keeps copies of. */
  owner?: string;
  origin: string;
  /** The pipeline id: forward sync of this service. */
  pipeline: string;
  publication: string;
  slot: string;
  tables: TablePlan[];
}

/**
 * Slot and publication names: lowercase [a-z0-9_], prefixed so an operator sees whose they are.
 * Slots are per cluster, so the slot also names the legacy database (two monoliths on one
 * cluster never share a slot); publications are per database.
 */
/**
 * forward: legacy → service. reverse: service → legacy (the tables it owns). feed: another
 * service's database → this service, for its read-only copies of tables that service owns,
 * paused until the owner's switch hands those tables over (see handover.ts).
 */
export type Direction = 'forward' | 'reverse' | 'feed';

/**
 * The replication origin a pipeline's applier marks its transactions with. Origins are
 * cluster-wide, so the name carries the target database (two pipelines of the same service
 * into different databases of one cluster never share one).
 */
export function originOf(service: string, direction: Direction, targetDatabaseUrl: string, owner?: string): string {
  const clean = (s: string) => s.toLowerCase().replace(/[^a-z0-9]/g, '_');
  const who = direction === 'feed' ? `${clean(owner ?? '')}_${clean(service)}` : clean(service);
  return `strangler_${direction}_${who}_${clean(new URL(targetDatabaseUrl).pathname.slice(1) || 'postgres')}`.slice(0, 63);
}

export function pipelineNames(service: string, sourceDatabaseUrl: string, direction: Direction = 'forward', targetDatabaseUrl = sourceDatabaseUrl, owner?: string): { pipeline: string; publication: string; slot: string; origin: string } {
  const clean = (s: string) => s.toLowerCase().replace(/[^a-z0-9]/g, '_');
  const db = clean(new URL(sourceDatabaseUrl).pathname.slice(1) || 'postgres');
  const tag = direction === 'reverse' ? 'rev_' : direction === 'feed' ? 'feed_' : '';
  return {
    pipeline: direction === 'feed' ? `${service}:feed:${owner}` : `${service}:${direction}`,
    publication: `strangler_${tag}${clean(service)}`,
    slot: `strangler_${db}_${tag}${clean(service)}`.slice(0, 63),
    // The replication origin its applier marks transactions with; the opposite direction's
    // decoder skips exactly that origin (other pipelines must still see those rows).
    origin: originOf(service, direction, targetDatabaseUrl, owner),
  };
}

/**
 * The reverse direction of a service (service database → legacy): only the tables it owns
 * (replicas are never written on the service), with the mapping turned around.
 */
export function reverseMapping(service: ResolvedService): ResolvedService {
  return {
    ...service,
    tables: service.readOnly
      ? []
      : service.tables
          .filter((t) => !t.replica)
          .map((t) => ({ source: t.target, target: t.source, columns: Object.fromEntries(Object.entries(t.columns).map(([a, b]) => [b, a])), exclude: [], replica: false, newColumn: t.newColumn, truncate: t.truncate })),
  };
}

/**
 * The services keeping read-only copies of tables `owner` owns, each with its feed mapping:
 * source names as the owner's database has them, columns composed through both mappings.
 */
export function feedsOf(services: readonly ResolvedService[], owner: ResolvedService): Array<{ service: ResolvedService; mapping: ResolvedService }> {
  if (owner.readOnly) return [];
  const owned = new Map(owner.tables.filter((t) => !t.replica).map((t) => [t.source, t]));
  return services
    .filter((s) => s.name !== owner.name)
    .map((service) => {
      const tables = service.tables
        .filter((t) => t.replica && owned.has(t.source))
        .map((t) => {
          const o = owned.get(t.source)!;
          const inOwner = (legacyColumn: string) => o.columns[legacyColumn] ?? legacyColumn;
          return {
            source: o.target,
            target: t.target,
            columns: Object.fromEntries(Object.entries(t.columns).map(([legacyCol, col]) => [inOwner(legacyCol), col])),
            // Columns the owner does not keep are not in its catalog: nothing to exclude there.
            exclude: t.exclude.filter((c) => !o.exclude.includes(c)).map(inOwner),
            replica: true,
            newColumn: t.newColumn,
            truncate: t.truncate,
          };
        });
      return { service, mapping: { ...service, tables } };
    })
    .filter((f) => f.mapping.tables.length > 0);
}

/** Why a table cannot be synced safely, and what to run or change so it can; null when it can. */
export function tableProblem(table: SourceTable | undefined, name: string, exclude: string[] = []): { problem: string; fix: string } | null {
  if (!table) return { problem: `legacy table "${name}" does not exist`, fix: `fix the services[].tables mapping in strangler.yaml (a table of the public schema)` };
  if (table.keyColumns.length === 0) {
    // SECURITY of the monolith's writes: once a table without a replica identity is in a
    // publication, PostgreSQL refuses its UPDATEs and DELETEs. Refuse before that can happen.
    return {
      problem: `legacy table "${name}" has no primary key or replica identity: in a publication its UPDATEs and DELETEs would fail on the monolith`,
      fix: `ALTER TABLE ${name} ADD PRIMARY KEY (<column>);  or, with a unique index on NOT NULL columns: ALTER TABLE ${name} REPLICA IDENTITY USING INDEX <index>;`,
    };
  }
  const odd = table.columns.filter((c) => c.userDefined && !exclude.includes(c.name));
  if (odd.length) {
    return {
      problem: `legacy table "${name}" has columns of user-defined types (${odd.map((c) => `${c.name} ${c.type}`).join(', ')}) the service database may not have`,
      fix: `exclude them in strangler.yaml (exclude: [${odd.map((c) => c.name).join(', ')}]) or create the types in the service database first`,
    };
  }
  return null;
}

/**
 * Pure: the replication plan of one service from its strangler.yaml mapping and the legacy
 * catalog. Every problem is collected and reported at once, before anything is created.
 */
export function buildSyncPlan(service: ResolvedService, catalog: Map<string, SourceTable>, sourceDatabaseUrl: string, direction: Direction = 'forward', targetDatabaseUrl = sourceDatabaseUrl, owner?: string): SyncPlan {
  const problems: string[] = [];
  const tables: TablePlan[] = [];
  for (const mapping of service.tables) {
    const table = catalog.get(mapping.source);
    const problem = tableProblem(table, mapping.source, mapping.exclude);
    if (problem) {
      problems.push(`${problem.problem}. Run: ${problem.fix}`);
      continue;
    }
    const known = new Set(table!.columns.map((c) => c.name));
    // An excluded column that does not exist is harmless (and how a column dropped on the
    // source is acknowledged); a renamed one must exist.
    for (const col of Object.keys(mapping.columns)) {
      if (!known.has(col)) problems.push(`services.${service.name}.tables.${mapping.source}: column "${col}" does not exist in legacy table "${mapping.source}" (columns: ${[...known].join(', ')})`);
    }
    const excludedKey = table!.keyColumns.filter((k) => mapping.exclude.includes(k));
    if (excludedKey.length) problems.push(`services.${service.name}.tables.${mapping.source}: key column(s) ${excludedKey.join(', ')} cannot be excluded`);
    tables.push({
      source: mapping.source,
      target: mapping.target,
      key: table!.keyColumns,
      replica: mapping.replica,
      rules: { columns: mapping.columns, exclude: mapping.exclude, newColumn: mapping.newColumn ?? 'ignore', truncate: mapping.truncate ?? 'apply' },
      columns: table!.columns
        .filter((c) => !mapping.exclude.includes(c.name))
        .map((c) => ({ source: c.name, target: mapping.columns[c.name] ?? c.name, type: c.type, notNull: c.notNull })),
    });
  }
  if (problems.length) {
    throw new StranglerError(`the sync of "${service.name}" cannot start; nothing was created on the legacy database:\n  ${problems.join('\n  ')}`, 'CHECK_FAILED', { problems });
  }
  return { service: service.name, direction, ...(owner ? { owner } : {}), ...pipelineNames(service.name, sourceDatabaseUrl, direction, targetDatabaseUrl, owner), tables };
}

const q = (ident: string) => `"${ident.replace(/"/g, '""')}"`;
export { q as quoteIdent };

/** CREATE TABLE for a target table: same types, the key as primary key, no foreign keys (tables are filled in any order). */
export function targetTableDdl(table: TablePlan): string {
  const cols = table.columns.map((c) => `${q(c.target)} ${c.type}${c.notNull ? ' NOT NULL' : ''}`);
  const key = table.key.map((k) => q(table.columns.find((c) => c.source === k)!.target));
  return `CREATE TABLE IF NOT EXISTS ${q(table.target)} (${cols.join(', ')}, PRIMARY KEY (${key.join(', ')}))`;
}
