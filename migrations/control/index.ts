import { migrateLatest, type MigrationSet } from '../runner.ts';
import { controlInitial } from './001_control.ts';
import { controlFence } from './002_fence.ts';
import { controlFenceLease } from './003_fence_lease.ts';
import { controlRouteMethods } from './004_route_methods.ts';
import { controlCanaryHash } from './005_canary_hash.ts';

/** The control database's migrations, in the schema strangler.yaml names (control.schema). */
export function controlMigrations(schema: string): MigrationSet {
  return { name: 'control', schema, migrations: { '001_control': controlInitial(schema), '002_fence': controlFence(schema), '003_fence_lease': controlFenceLease(schema), '004_route_methods': controlRouteMethods(schema), '005_canary_hash': controlCanaryHash(schema) } };
}

export function migrateControl(databaseUrl: string, schema: string): Promise<string[]> {
  return migrateLatest(databaseUrl, controlMigrations(schema));
}
