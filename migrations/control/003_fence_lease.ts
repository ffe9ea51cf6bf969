import type { Knex } from 'knex';
import type { Migration } from '../runner.ts';

/**
 * A fence carries a lease: the time until which its writes may be held. Gateways treat a fence
 * past it as lifted, so a command killed while it held writes cannot hold them forever.
 */
export function controlFenceLease(schema: string): Migration {
  return {
    async up(knex: Knex) {
      await knex.raw(`ALTER TABLE "${schema}".routes ADD COLUMN IF NOT EXISTS fence_expires_at timestamptz`);
    },
    async down(knex: Knex) {
      await knex.raw(`ALTER TABLE "${schema}".routes DROP COLUMN IF EXISTS fence_expires_at`);
    },
  };
}
