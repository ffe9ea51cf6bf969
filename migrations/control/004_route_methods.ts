import type { Knex } from 'knex';
import type { Migration } from '../runner.ts';

/**
 * A route may be scoped to HTTP methods (reads move before writes): its mode applies to those,
 * every other method goes to legacy. null: all methods (every route written before this).
 */
export function controlRouteMethods(schema: string): Migration {
  return {
    async up(knex: Knex) {
      await knex.raw(`ALTER TABLE "${schema}".routes ADD COLUMN IF NOT EXISTS methods text[]`);
    },
    async down(knex: Knex) {
      await knex.raw(`ALTER TABLE "${schema}".routes DROP COLUMN IF EXISTS methods`);
    },
  };
}
