import type { ResolvedConfig } from '../core/config/load.ts';
import { silentLogger } from '../core/logger.ts';
import { cleanupPipeline } from '../migrations/sync/status.ts';
import { recordVerification, verifyPipeline } from '../migrations/sync/verify.ts';
import { SyncWorker } from '../migrations/sync/worker.ts';
import { createTestDatabase, dropTestDatabase, gatewayTestEnv, legacyTestConfig } from './harness.ts';
import { seedLegacy } from './reference.ts';

/**
 * A stack a cutover of /api/analytics runs on (read-only: no reverse sync): a seeded legacy
 * database, the analytics database fed by a running, verified sync, echo upstreams answering
 * the prefix alike on both sides, and a control database. The data planes are the test's.
 */
export async function analyticsCutoverEnv(label: string, prefix: string) {
  const env = await gatewayTestEnv(label, ['analytics']);
  const legacy = await legacyTestConfig(`${label}_legacy`);
  await seedLegacy(legacy.config.legacy.databaseUrl, { users: 3, invoices: 40, seed: 9 });
  const analyticsDb = await createTestDatabase(`${label}_analytics`);
  const same = { status: 200, body: { items: [{ status: 'paid', invoices: 1, total: '1.00' }] } };
  env.legacy.override.set(prefix, () => same);
  env.upstreams.analytics.override.set(prefix, () => same);
  const config: ResolvedConfig = {
    ...env.config,
    legacy: { ...env.config.legacy, databaseUrl: legacy.config.legacy.databaseUrl },
    // The test takes analytics alone, so it does not wait for invoices.
    services: env.config.services.map((s) => (s.name === 'analytics' ? { ...s, databaseUrl: analyticsDb, dependsOn: [] } : s)),
  };
  const worker = new SyncWorker({ config, service: config.services.find((s) => s.name === 'analytics')!, logger: silentLogger });
  await worker.start();
  await recordVerification(analyticsDb, await verifyPipeline({ sourceUrl: config.legacy.databaseUrl, targetUrl: analyticsDb, plan: worker.plan! }));
  return {
    env,
    config,
    worker,
    analyticsDb,
    async cleanup() {
      await worker.stop();
      await cleanupPipeline(config, config.services.find((s) => s.name === 'analytics')!).catch(() => undefined);
      await dropTestDatabase(analyticsDb).catch(() => undefined);
      await legacy.cleanup();
      await env.cleanup();
    },
  };
}
