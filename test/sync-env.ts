/**
 * Sync test environments: a seeded legacy database (the reference schema) and an empty database
 * for one service, with the workers a test starts, stopped at cleanup.
 */
import pg from 'pg';
import type { ResolvedConfig, ResolvedService } from '../core/config/load.ts';
import { createLogger, silentLogger } from '../core/logger.ts';
import { seedLegacy } from '../examples/reference/monolith/seed.ts';
import { cleanupPipeline } from '../migrations/sync/status.ts';
import { SyncWorker } from '../migrations/sync/worker.ts';
import { createTestDatabase, dropTestDatabase, legacyTestConfig } from './harness.ts';

export interface SyncEnv {
  config: ResolvedConfig;
  service: ResolvedService;
  legacy: pg.Client;
  target: pg.Client;
  cleanup(): Promise<void>;
}

/** Every worker started through `syncWorker`, so a test file can stop them all. */
export const syncWorkers: SyncWorker[] = [];

/** A seeded legacy database and an empty database for the named service (as strangler.yaml maps it). */
export async function syncEnv(label: string, serviceName = 'invoices', tweak: (s: ResolvedService) => ResolvedService = (s) => s): Promise<SyncEnv> {
  const t = await legacyTestConfig(label);
  await seedLegacy(t.config.legacy.databaseUrl, { users: 5, invoices: 200, seed: 3 });
  const targetUrl = await createTestDatabase(`${label}_svc`);
  const service = tweak({ ...t.config.services.find((s) => s.name === serviceName)!, databaseUrl: targetUrl });
  const config = { ...t.config, services: t.config.services.map((s) => (s.name === serviceName ? service : s)) };
  const legacy = new pg.Client({ connectionString: config.legacy.databaseUrl });
  const target = new pg.Client({ connectionString: targetUrl });
  await legacy.connect();
  await target.connect();
  return {
    config,
    service,
    legacy,
    target,
    async cleanup() {
      for (const w of syncWorkers) if (w.plan?.service === service.name) await w.stop();
      await cleanupPipeline(config, service).catch(() => undefined);
      await cleanupPipeline(config, service, 'reverse').catch(() => undefined);
      await legacy.end();
      await target.end();
      await dropTestDatabase(targetUrl);
      await t.cleanup();
    },
  };
}

/** A worker for the env's service (not started). */
export function syncWorker(e: Pick<SyncEnv, 'config' | 'service'>, options: Partial<ConstructorParameters<typeof SyncWorker>[0]> = {}): SyncWorker {
  const w = new SyncWorker({ config: e.config, service: e.service, logger: process.env.SYNC_DEBUG ? createLogger('sync', 'debug') : silentLogger, ...options });
  syncWorkers.push(w);
  return w;
}
