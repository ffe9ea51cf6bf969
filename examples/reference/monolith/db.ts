import type { Knex } from 'knex';
import pg from 'pg';
import { createKnex } from '../../../migrations/runner.ts';

// Dates stay 'YYYY-MM-DD' strings (no time zone shift through a JS Date); numeric stays a string
// (money is never a float); both are pg's wire text, so every app answers the same JSON.
pg.types.setTypeParser(pg.types.builtins.DATE, (value: string) => value);

/** The knex instance of an app's database. */
/** Deadlines of the monolith's and services' database calls: a hung database fails requests and the events relay's polls instead of wedging them. */
export const DATABASE_DEADLINES = { connectTimeoutMs: 5_000, queryTimeoutMs: 30_000 };

export function openDatabase(databaseUrl: string, maxConnections = 10, deadlines = DATABASE_DEADLINES): Knex {
  return createKnex(databaseUrl, { min: 0, max: maxConnections }, deadlines);
}
