import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, type ResolvedConfig, type ResolvedService } from '../../core/config/load.ts';
import { silentLogger } from '../../core/logger.ts';
import { compareTables, bankTables, initBank, runBankLoad } from '../../test/oltp.ts';
import { createTestDatabase, dropTestDatabase, ROOT, sharedStack } from '../../test/harness.ts';
import { PostgresCluster } from '../../stack/postgres-cluster.ts';
import type { Direction } from './plan.ts';
import { cleanupPipeline, drainPipeline, syncStatus } from './status.ts';
import { SyncWorker } from './worker.ts';

/**
 * The sync's central promise under the conditions that broke it (issue 18): many sessions
 * committing single-row transactions back to back, so that one commit record often starts
 * exactly where the previous one ends, and the worker SIGKILLed at random points (while it
 * starts, backfills, streams, or holds a half-applied batch) again and again. After the drain
 * every row must be equal on both sides: nothing lost, nothing applied twice.
 */

const KILLS = Number(process.env.CRASH_KILLS) || 12;
const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

/**
 * The monolith's database on a server of its own, as in production: its WAL holds only its
 * own writes, so commit records of concurrent sessions often follow each other directly (the
 * worker's writes to the service database would otherwise sit between them). fsync stays on:
 * group commit is what lines commit records up.
 */
async function bankEnv(label: string): Promise<{ config: ResolvedConfig; service: ResolvedService }> {
  const { pgBaseUrl, redisUrl } = sharedStack();
  const base = loadConfig(resolve(ROOT, 'strangler.yaml'), { postgresUrl: pgBaseUrl, redisUrl, logLevel: 'silent' });
  const cluster = await PostgresCluster.start();
  cleanups.push(() => cluster.destroy());
  await cluster.createDatabase('legacy');
  const legacyUrl = `${cluster.baseUrl}/legacy`;
  const serviceUrl = await createTestDatabase(`${label}_bank`);
  cleanups.push(() => dropTestDatabase(serviceUrl));
  await initBank(legacyUrl, 1);
  const service: ResolvedService = { ...base.services[0], name: 'bank', prefix: '/api/bank', databaseUrl: serviceUrl, database: serviceUrl, tables: bankTables(), readOnly: false, dependsOn: [] };
  return { config: { ...base, legacy: { ...base.legacy, databaseUrl: legacyUrl }, services: [service] }, service };
}

function spawnWorker(config: ResolvedConfig, direction: Direction): { child: ChildProcess; up: Promise<void>; exited: Promise<void> } {
  const child = spawn(process.execPath, ['--import', 'tsx', resolve(ROOT, 'test/fixtures/sync-worker.ts'), 'bank', direction], {
    env: { ...process.env, STRANGLER_TEST_CONFIG: JSON.stringify(config) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<void>((ok) => child.once('exit', () => ok()));
  const up = new Promise<void>((ok, fail) => {
    child.stdout!.on('data', (d) => String(d).includes('streaming') && ok());
    child.once('exit', (code, signal) => fail(new Error(`worker exited ${code ?? signal}: ${err.slice(-1500)}`)));
  });
  up.catch(() => undefined);
  return { child, up, exited };
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Kills a worker process `KILLS` times at random moments (some while it starts, most while it
 * streams), restarting it each time, then runs one to the end of the drain.
 */
async function crashRepeatedly(config: ResolvedConfig, direction: Direction): Promise<string[]> {
  const log: string[] = [];
  for (let i = 0; i < KILLS; i++) {
    const w = spawnWorker(config, direction);
    const early = Math.random() < 0.25;
    if (early) {
      const ms = 100 + Math.floor(Math.random() * 900);
      await Promise.race([pause(ms), w.exited]);
      log.push(`kill ${i + 1}: ${ms} ms after spawn`);
    } else {
      await w.up;
      const ms = Math.floor(Math.random() * 1500);
      await pause(ms);
      log.push(`kill ${i + 1}: ${ms} ms after streaming`);
    }
    w.child.kill('SIGKILL');
    await w.exited;
  }
  return log;
}

describe('sync under OLTP load with the worker SIGKILLed at random', () => {
  it(`forward: 8 sessions of back-to-back single-row commits, ${KILLS} crashes: every row equal after the drain`, async () => {
    const { config, service } = await bankEnv('crash_fwd');
    const load = runBankLoad(config.legacy.databaseUrl, { clients: Number(process.env.CRASH_CLIENTS) || 8, seconds: 40, rate: Number(process.env.CRASH_RATE) || undefined });
    const kills = await crashRepeatedly(config, 'forward');
    const { transactions, tps } = await load.done;
    const last = spawnWorker(config, 'forward');
    cleanups.push(async () => {
      last.child.kill('SIGKILL');
      await last.exited;
      await cleanupPipeline(config, service);
    });
    await last.up;
    expect(await drainPipeline(config, service, 'forward', 600_000), 'the pipeline drains').not.toBeNull();
    const differences = await compareTables(config.legacy.databaseUrl, service.databaseUrl);
    console.log(`forward crash scenario: ${transactions} transactions (${tps} tps), ${kills.length} kills (${kills.join('; ')})`);
    expect(differences, JSON.stringify(differences)).toEqual([]);
    expect((await syncStatus(config, service)).lastError ?? '').not.toMatch(/internal/i);
  }, 300_000);

  it(`reverse: the service's writers, ${KILLS} crashes of the reverse worker: legacy equal row by row, nothing echoed`, async () => {
    const { config, service } = await bankEnv('crash_rev');
    // The forward sync creates the service's tables and keeps running, as during a canary.
    const forward = new SyncWorker({ config, service, logger: silentLogger });
    cleanups.push(() => forward.stop());
    await forward.start();
    // The reverse slot must exist before the service's first write (the control plane's rule).
    const first = spawnWorker(config, 'reverse');
    await first.up;
    first.child.kill('SIGKILL');
    await first.exited;
    const forwardRows = async () => (await syncStatus(config, service)).rowsApplied;
    const forwardBefore = await forwardRows();
    const load = runBankLoad(service.databaseUrl, { clients: Number(process.env.CRASH_CLIENTS) || 8, seconds: 40, rate: Number(process.env.CRASH_RATE) || undefined });
    const kills = await crashRepeatedly(config, 'reverse');
    const { transactions, tps } = await load.done;
    const last = spawnWorker(config, 'reverse');
    cleanups.push(async () => {
      last.child.kill('SIGKILL');
      await last.exited;
      await cleanupPipeline(config, service, 'reverse');
    });
    await last.up;
    expect(await drainPipeline(config, service, 'reverse', 180_000), 'the reverse pipeline drains').not.toBeNull();
    expect(await drainPipeline(config, service, 'forward', 60_000), 'the forward pipeline drains').not.toBeNull();
    const differences = await compareTables(service.databaseUrl, config.legacy.databaseUrl);
    console.log(`reverse crash scenario: ${transactions} transactions (${tps} tps), ${kills.length} kills (${kills.join('; ')})`);
    expect(differences, JSON.stringify(differences)).toEqual([]);
    // Legacy took only the reverse sync's writes: the forward sync applied none of them back.
    expect(await forwardRows()).toBe(forwardBefore);
  }, 300_000);
});
