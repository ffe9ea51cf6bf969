import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../core/logger.ts';
import { boundedRedisOptions, RedisHealth, type DependencyHealth } from '../core/redis-health.ts';
import { RedisServer } from '../stack/redis-server.ts';
import { waitFor } from '../stack/ports.ts';
import { sharedStack, uniqueName } from '../test/harness.ts';
import { BUCKET_MS, readRouteFigures, RouteFigures } from './metrics.ts';
import { createRateLimiter } from './rate-limit.ts';
import { redisKeys } from './redis-keys.ts';

/** A health the test sets by hand (the Redis behind it is real). */
function switchableHealth() {
  const skipped: string[] = [];
  const h = { ok: true, reason: null as string | null, failed: () => undefined, unavailable: (what: string) => void skipped.push(what), skipped };
  return h satisfies DependencyHealth;
}

let redis: Redis;
beforeAll(() => {
  redis = new Redis(sharedStack().redisUrl);
});
afterAll(() => {
  redis?.disconnect();
});

describe('the gateway while Redis is unavailable', () => {
  it('decides rate limits on its own count, synchronously, and shares the count once Redis is back', async () => {
    const keys = redisKeys(`${uniqueName('rl_down')}:`);
    const health = switchableHealth();
    const limit = createRateLimiter({ rules: [{ prefix: '/api', limit: 3, windowMs: 86_400_000 }], redis, keyPrefix: keys.rateLimit, onStoreError: () => undefined, sync: { intervalMs: 50, exactWithin: 100 }, health });
    try {
      health.ok = false;
      // Every hit is near the limit (exactWithin 100) and would ask Redis first: not while it is unavailable.
      const decisions = Array.from({ length: 4 }, () => limit('/api/x', 'ip:1'));
      expect(decisions.some((d) => d instanceof Promise)).toBe(false);
      expect(decisions.map((d) => (d as { limited: boolean }).limited)).toEqual([false, false, false, true]);
      expect(health.skipped).toContain('rate-limit');
      await limit.flush();
      expect(await redis.keys(`${keys.rateLimit('/api')}*`)).toEqual([]);
      health.ok = true;
      await limit.flush();
      const [key] = await redis.keys(`${keys.rateLimit('/api')}*`);
      expect(Number(await redis.get(key))).toBe(4);
    } finally {
      limit.stop();
    }
  });

  it('sends each counted hit to Redis once when flushes overlap (a slow Redis, a timer tick during an explicit flush)', async () => {
    const keys = redisKeys(`${uniqueName('rl_overlap')}:`);
    const limit = createRateLimiter({ rules: [{ prefix: '/api', limit: 1_000, windowMs: 86_400_000 }], redis, keyPrefix: keys.rateLimit, onStoreError: () => undefined, sync: { intervalMs: 60_000, exactWithin: 0 }, health: switchableHealth() });
    try {
      // The first hit of a key asks Redis; the next ones are counted here until a flush.
      await limit('/api/x', 'ip:2');
      const later = Array.from({ length: 4 }, () => limit('/api/x', 'ip:2'));
      expect(later.some((d) => d instanceof Promise)).toBe(false);
      await Promise.all([limit.flush(), limit.flush(), limit.flush()]);
      const [key] = await redis.keys(`${keys.rateLimit('/api')}*`);
      expect(Number(await redis.get(key))).toBe(5);
    } finally {
      limit.stop();
    }
  });

  it('holds route figures back while Redis is unavailable and adds them to the bucket they belong to once it is back', async () => {
    const keys = redisKeys(`${uniqueName('rf_down')}:`);
    const health = switchableHealth();
    const figures = new RouteFigures(redis, keys, health);
    const at = Date.now();
    health.ok = false;
    figures.record('invoices', 'service', 200, 12);
    figures.record('invoices', 'service', 503, 40);
    await figures.flush();
    expect(figures.heldBuckets).toBe(1);
    expect(health.skipped).toContain('figures');
    expect((await readRouteFigures(redis, keys, 'invoices', 'service', at - BUCKET_MS, at + BUCKET_MS)).requests).toBe(0);
    health.ok = true;
    figures.record('invoices', 'service', 200, 8);
    await figures.flush();
    expect(figures.heldBuckets).toBe(0);
    const read = await readRouteFigures(redis, keys, 'invoices', 'service', at - BUCKET_MS, Date.now() + BUCKET_MS);
    expect(read).toMatchObject({ requests: 3, errors: 1 });
  });
});

describe('RedisHealth on a Redis that freezes', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await RedisServer.start();
  });
  afterAll(async () => {
    await server?.destroy();
  });

  it('says unavailable within the command deadline plus one probe, says why, and available again once Redis answers', async () => {
    const client = new Redis(server.url, boundedRedisOptions({ commandTimeoutMs: 200 }));
    client.on('error', () => undefined);
    const health = new RedisHealth(client, { commandTimeoutMs: 200, probeIntervalMs: 100, logger: silentLogger });
    try {
      await waitFor('a connection', async () => client.status === 'ready', 5_000, 20);
      health.start();
      await waitFor('healthy', async () => health.ok, 2_000, 20);
      server.pause();
      await waitFor('unavailable', async () => !health.ok, 2_000, 10);
      expect(health.reason).toBe('Redis did not answer within 200 ms');
      server.resume();
      await waitFor('available again', async () => health.ok, 2_000, 10);
      expect(health.lastOutage).toMatchObject({ reason: 'Redis did not answer within 200 ms' });
      expect(health.outages).toBe(1);
    } finally {
      server.resume();
      health.stop();
      client.disconnect();
    }
  });

  it('reports a lost connection, but not the one its owner closes after stop() (a shutdown is no outage)', async () => {
    const watch = async (close: (c: Redis, h: RedisHealth) => void) => {
      const client = new Redis(server.url, boundedRedisOptions({ commandTimeoutMs: 200 }));
      client.on('error', () => undefined);
      const warned: string[] = [];
      const logger: typeof silentLogger = Object.assign(Object.create(silentLogger), { warn: (_: unknown, msg: string) => void warned.push(msg) });
      const health = new RedisHealth(client, { commandTimeoutMs: 200, probeIntervalMs: 100, logger });
      await waitFor('a connection', async () => client.status === 'ready', 5_000, 20);
      health.start();
      await waitFor('healthy', async () => health.ok, 2_000, 20);
      close(client, health);
      await waitFor('the connection to close', async () => client.status === 'end', 2_000, 10);
      health.stop();
      return { warned, outages: health.outages };
    };
    const lost = await watch((client) => client.disconnect());
    expect(lost).toEqual({ warned: ['Redis unavailable (the connection to Redis was lost); going on without it'], outages: 1 });
    const shutdown = await watch((client, health) => {
      health.stop();
      client.disconnect();
    });
    expect(shutdown).toEqual({ warned: [], outages: 0 });
  });
});
