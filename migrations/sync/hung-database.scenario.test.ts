import { resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, type ResolvedConfig, type ResolvedService } from '../../core/config/load.ts';
import { silentLogger } from '../../core/logger.ts';
import { PostgresCluster } from '../../stack/postgres-cluster.ts';
import { waitFor } from '../../stack/ports.ts';
import { ROOT, sharedStack } from '../../test/harness.ts';
import { bankTables, compareTables, initBank, runBankLoad } from '../../test/oltp.ts';
import { drainPipeline } from './status.ts';
import { SyncWorker } from './worker.ts';

/**
 * A database that hangs (SIGSTOP of the whole server: connections stay open, nothing answers)
 * is treated like one that is down (issue 19): the worker's statements and its replication
 * stream have deadlines, so it says so and reconnects instead of waiting for ever, and once the
 * server answers again it goes on from the applied LSN with nothing lost.
 */

const clusters: PostgresCluster[] = [];
afterAll(async () => {
  for (const c of clusters) {
    c.resume();
    await c.destroy();
  }
});

async function env(): Promise<{ legacy: PostgresCluster; target: PostgresCluster; config: ResolvedConfig; service: ResolvedService }> {
  const [legacy, target] = await Promise.all([PostgresCluster.start({ ephemeral: true }), PostgresCluster.start({ ephemeral: true })]);
  clusters.push(legacy, target);
  await legacy.createDatabase('legacy');
  await target.createDatabase('bank');
  await initBank(legacy.url('legacy'), 1, 2_000);
  const base = loadConfig(resolve(ROOT, 'strangler.yaml'), { postgresUrl: sharedStack().pgBaseUrl, logLevel: 'silent' });
  const service: ResolvedService = { ...base.services[0], name: 'bank', prefix: '/api/bank', database: 'bank', databaseUrl: target.url('bank'), tables: bankTables(), readOnly: false, dependsOn: [] };
  const config: ResolvedConfig = {
    ...base,
    legacy: { ...base.legacy, databaseUrl: legacy.url('legacy') },
    services: [service],
    sync: { ...base.sync, connectTimeoutMs: 1_000, queryTimeoutMs: 1_500, receiveTimeoutMs: 1_500 },
  };
  return { legacy, target, config, service };
}

describe('sync with a database that hangs', () => {
  it('takes a frozen service database, then a frozen legacy database, as down within its deadlines, and loses nothing once they answer', async () => {
    const { legacy, target, config, service } = await env();
    const worker = new SyncWorker({ config, service, logger: silentLogger });
    await worker.start();
    const load = runBankLoad(config.legacy.databaseUrl, { clients: 4, seconds: 25, rate: 300 });
    try {
      const startedAt = worker.appliedLsn;
      await waitFor('changes applied before the freeze', async () => worker.appliedLsn !== startedAt, 30_000, 50);
      // The service database freezes: the group's statements hit their deadline.
      target.pause();
      const frozenAt = Date.now();
      await waitFor('the worker to give up on the frozen service database', async () => worker.lastError !== null, 10_000, 50);
      const noticedTarget = Date.now() - frozenAt;
      expect(worker.lastError!.message).toMatch(/timeout|timed out/i);
      // Time is the subject: frozen for longer than the deadlines, the worker keeps retrying, never hangs.
      await new Promise((r) => setTimeout(r, 3_000));
      target.resume();
      await waitFor('the worker to apply again', async () => worker.state === 'active' && (await drainPipeline(config, service, 'forward', 2_000)) !== null, 30_000, 200);

      // The legacy database freezes: the stream goes silent, a ping gets no answer.
      const before = worker.lastError;
      legacy.pause();
      const frozenSource = Date.now();
      await waitFor('the worker to give up on the frozen legacy database', async () => worker.lastError !== before, 10_000, 50);
      const noticedSource = Date.now() - frozenSource;
      expect(worker.lastError!.message).toMatch(/taken as hung|timeout/i);
      // Time is the subject: frozen for longer than the deadlines, the worker keeps retrying, never hangs.
      await new Promise((r) => setTimeout(r, 3_000));
      legacy.resume();
      console.log(`hung databases: the frozen service database was noticed after ${noticedTarget} ms, the frozen legacy database after ${noticedSource} ms (deadlines 1.5 s)`);
    } finally {
      target.resume();
      legacy.resume();
      await load.done.catch(() => undefined);
    }
    expect(await drainPipeline(config, service, 'forward', 60_000), 'the pipeline drains').not.toBeNull();
    expect(await compareTables(config.legacy.databaseUrl, service.databaseUrl)).toEqual([]);
    await worker.stop();
  }, 180_000);
});
