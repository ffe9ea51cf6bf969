import type { Knex } from 'knex';
import type { Migration } from '../runner.ts';

/** A migration that adds one column to `<schema>.routes` (and drops it going down). */
export function addRoutesColumn(schema: string, column: string, definition: string): Migration {
  return {
    async up(knex: Knex) {
      await knex.raw(`ALTER TABLE "${schema}".routes ADD COLUMN IF NOT EXISTS ${column} ${definition}`);
    },
    async down(knex: Knex) {
      await knex.raw(`ALTER TABLE "${schema}".routes DROP COLUMN IF EXISTS ${column}`);
    },
  };
}
