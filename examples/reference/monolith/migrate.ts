import { legacyMigrations } from '../migrations/legacy/index.ts';
import { migrateLatest } from '../../../migrations/runner.ts';

export { legacyMigrations };

/** Brings the legacy database to the latest schema; returns the migrations applied. */
export function migrateLegacy(databaseUrl: string): Promise<string[]> {
  return migrateLatest(databaseUrl, legacyMigrations);
}
