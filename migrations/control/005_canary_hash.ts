import type { Knex } from 'knex';
import type { Migration } from '../runner.ts';

/**
 * The hash a canary buckets its users by (gateway/canary.ts): set when a canary begins, kept while
 * it runs. null: a canary begun before the column, which keeps the hash it began with (fnv1a).
 */
export function controlCanaryHash(schema: string): Migration {
  return {
    async up(knex: Knex) {
      await knex.raw(`ALTER TABLE "${schema}".routes ADD COLUMN IF NOT EXISTS canary_hash text`);
    },
    async down(knex: Knex) {
      await knex.raw(`ALTER TABLE "${schema}".routes DROP COLUMN IF EXISTS canary_hash`);
    },
  };
}
