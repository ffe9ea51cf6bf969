import knexFactory, { type Knex } from 'knex';

/** One knex migration: `up` and `down` are both required (rollback must always be possible). */
export interface Migration {
  up(knex: Knex): Promise<void>;
  down(knex: Knex): Promise<void>;
}

/** A named, ordered set of migrations for one database (legacy, control, a service). */
export interface MigrationSet {
  name: string;
  /** Migration name → migration, applied in key order (prefix names with 001_, 002_ ...). */
  migrations: Record<string, Migration>;
  /** Schema holding knex's bookkeeping tables (default: public). */
  schema?: string;
}

/**
 * Migrations are imported statically and handed to knex through a migrationSource, so they run
 * the same under tsx, vitest and a bundle, with no file-system scanning.
 */
function sourceOf(set: MigrationSet): Knex.MigrationSource<string> {
  const names = Object.keys(set.migrations).sort();
  return {
    getMigrations: async () => names,
    getMigrationName: (name) => name,
    getMigration: async (name) => set.migrations[name],
  };
}

function migratorConfig(set: MigrationSet): Knex.MigratorConfig {
  return {
    migrationSource: sourceOf(set),
    tableName: `knex_migrations_${set.name}`,
    schemaName: set.schema,
  };
}

/**
 * A knex over PostgreSQL. With `deadlines`, a database that hangs (a frozen host, a network
 * black hole: the connection stays open, nothing answers) fails the query instead of holding it
 * and its pooled connection for ever: connect, pool acquire and each query get a time limit.
 */
export function createKnex(databaseUrl: string, pool: { min?: number; max?: number } = {}, deadlines?: { connectTimeoutMs: number; queryTimeoutMs: number }): Knex {
  if (!deadlines) return knexFactory({ client: 'pg', connection: databaseUrl, pool: { min: pool.min ?? 0, max: pool.max ?? 10 } });
  return knexFactory({
    client: 'pg',
    connection: { connectionString: databaseUrl, connectionTimeoutMillis: deadlines.connectTimeoutMs, query_timeout: deadlines.queryTimeoutMs, keepAlive: true } as Knex.PgConnectionConfig,
    pool: { min: pool.min ?? 0, max: pool.max ?? 10 },
    acquireConnectionTimeout: deadlines.connectTimeoutMs + deadlines.queryTimeoutMs,
  });
}

/** Applies every pending migration of a set; returns the names applied. */
export async function migrateLatest(databaseUrl: string, set: MigrationSet): Promise<string[]> {
  const knex = createKnex(databaseUrl, { max: 1 });
  try {
    if (set.schema) await knex.raw('CREATE SCHEMA IF NOT EXISTS ??', [set.schema]);
    const [, applied] = (await knex.migrate.latest(migratorConfig(set))) as [number, string[]];
    return applied;
  } finally {
    await knex.destroy();
  }
}

/** Rolls back every migration of a set (used by tests that check every `down`). */
export async function migrateDownAll(databaseUrl: string, set: MigrationSet): Promise<void> {
  const knex = createKnex(databaseUrl, { max: 1 });
  try {
    await knex.migrate.rollback(migratorConfig(set), true);
  } finally {
    await knex.destroy();
  }
}
