import type { Knex } from 'knex';
import type { Migration } from '../runner.ts';

/** A fenced route holds writes to its prefix at every gateway (reads go on) during a switchover. */
export function controlFence(schema: string): Migration {
  return {
    async up(knex: Knex) {
      await knex.raw(`ALTER TABLE "${schema}".routes ADD COLUMN IF NOT EXISTS fenced boolean NOT NULL DEFAULT false`);
    },
    async down(knex: Knex) {
      await knex.raw(`ALTER TABLE "${schema}".routes DROP COLUMN IF EXISTS fenced`);
    },
  };
}
