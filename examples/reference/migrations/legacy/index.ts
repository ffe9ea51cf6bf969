import type { MigrationSet } from '../../../../migrations/runner.ts';
import * as initial from './001_initial.ts';

/** The legacy monolith's database. */
export const legacyMigrations: MigrationSet = {
  name: 'legacy',
  migrations: { '001_initial': initial },
};
