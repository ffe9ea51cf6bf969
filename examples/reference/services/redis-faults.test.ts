import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResolvedConfig } from '../../../core/config/load.ts';
import { withDeadline } from '../../../core/deadline.ts';
import { silentLogger } from '../../../core/logger.ts';
import { createRedisRegistry } from '../../../core/registry/redis-registry.ts';
import { RedisServer } from '../../../stack/redis-server.ts';
import { waitFor } from '../../../stack/ports.ts';
import { createTestDatabase, dropTestDatabase, jsonClient, legacyTestConfig } from '../../../test/harness.ts';
import { startService, type RunningService } from './app.ts';
import { eventStream } from './events/events.ts';
import { signLegacyToken } from './kit/jwt.ts';

/**
 * Issue 19, the services' side: with Redis frozen (SIGSTOP: connections open, no answer) a
 * service instance could not start (its registration's first heartbeat waited for ever) nor
 * stop (the event relay waited on its XADD inside a database transaction).
 */
let config: ResolvedConfig;
let redis: RedisServer;
let cleanup: () => Promise<void>;
/** Far longer than any deadline involved: reaching it means something waited on the frozen Redis. */
const HUNG_MS = 15_000;

beforeAll(async () => {
  redis = await RedisServer.start();
  const t = await legacyTestConfig('svc_redis_faults');
  const invoicesDb = await createTestDatabase('svc_redis_faults_invoices');
  config = { ...t.config, redis: { ...t.config.redis, url: redis.url }, services: t.config.services.map((s) => (s.name === 'invoices' ? { ...s, databaseUrl: invoicesDb } : s)) };
  cleanup = async () => {
    await dropTestDatabase(invoicesDb);
    await t.cleanup();
  };
});

afterAll(async () => {
  redis?.resume();
  await redis?.destroy();
  await cleanup?.();
});

describe('a service while Redis is frozen', () => {
  it('keeps serving, lets a new instance start and an old one stop, and publishes its events once Redis answers', async () => {
    const token = await signLegacyToken({ id: 9, email: 'nine@example.test' }, { secret: config.legacy.jwtSecret!, issuer: config.legacy.jwtIssuer, ttlSeconds: 600 });
    const running: RunningService[] = [];
    const reader = new Redis(redis.url);
    try {
      const a = await startService(config, 'invoices', { port: 0, logger: silentLogger });
      running.push(a);
      redis.pause();
      const created = await withDeadline(jsonClient(a.url)('POST', '/api/invoices', { customerName: 'Frozen Co', items: [{ description: 'Work', quantity: '1', unitPrice: '5.00' }] }, token), HUNG_MS, 'a write to the running instance');
      expect(created.status).toBe(201);
      const b = await withDeadline(startService(config, 'invoices', { port: 0, logger: silentLogger }), HUNG_MS, 'a new instance starting');
      running.push(b);
      expect((await jsonClient(b.url)('POST', '/api/invoices', { customerName: 'Frozen Co', items: [{ description: 'More', quantity: '1', unitPrice: '7.00' }] }, token)).status).toBe(201);
      await withDeadline(a.close(), HUNG_MS, 'the old instance stopping');
      running.shift();
      redis.resume();

      // Redis answers again: the outbox drains to the stream, and the new instance is registered.
      await waitFor('both events on the stream', async () => (await reader.xlen(eventStream(config.redis.keyPrefix, 'invoices'))) >= 2, 10_000, 100);
      expect(await b.db('event_outbox').whereNull('published_at').count().first()).toEqual({ count: '0' });
      const registry = createRedisRegistry({ redis: reader, keyPrefix: config.redis.keyPrefix });
      await waitFor('the new instance in the registry', async () => (await registry.list('invoices')).some((i) => i.id === b.registration?.instance.id), 10_000, 100);
    } finally {
      redis.resume();
      for (const s of running) await s.close();
      reader.disconnect();
    }
  });
});
