import { Redis } from 'ioredis';
import type { ResolvedConfig } from '../core/config/load.ts';
import type { Logger } from '../core/logger.ts';
import { boundedRedisOptions, redisReady, RedisHealth } from '../core/redis-health.ts';
import { redisKeys } from './redis-keys.ts';
import { LiveRouteState, type LiveRouteStateOptions } from './route-state.ts';
import { createPgRouteStore } from './route-store.ts';

/**
 * What a data plane (either engine) needs to follow the control plane: Redis (commands with
 * deadlines, and a subscriber), its health, the control database's route store, and the live
 * route state that applies and acknowledges each version under the instance id.
 */
export function createRouteFollower(config: ResolvedConfig, o: { instanceId: string; logger: Logger; onRedisUnavailable?: (what: string) => void } & Pick<LiveRouteStateOptions, 'engine' | 'beforeAck' | 'beforeAckRequired'>) {
  const keys = redisKeys(config.redis.keyPrefix);
  // Every command has a deadline and none queues while Redis is down: the request path must not
  // wait on it. Auto-pipelining sends the rate-limit commands of concurrent requests in one write.
  const redis = new Redis(config.redis.url, { ...boundedRedisOptions(config.redis), enableAutoPipelining: true });
  // Route notifications: a SUBSCRIBE waits (no deadline, kept across reconnects) until Redis answers.
  const subscriber = new Redis(config.redis.url, { connectTimeout: 2_000, retryStrategy: (n: number) => Math.min(n * 200, 2_000), enableOfflineQueue: true, maxRetriesPerRequest: null });
  redis.on('error', () => undefined);
  subscriber.on('error', () => undefined);
  const redisHealth = new RedisHealth(redis, { ...config.redis, logger: o.logger, onUnavailable: o.onRedisUnavailable });
  const store = createPgRouteStore(config.control.databaseUrl, config.control.schema, { queryTimeoutMs: config.control.queryTimeoutMs });
  const g = config.gateway;
  const routes = new LiveRouteState({
    instanceId: o.instanceId,
    store,
    redis,
    subscriber,
    keys,
    snapshotFile: g.snapshotFile,
    pollIntervalMs: g.pollIntervalMs,
    heartbeatIntervalMs: g.heartbeatIntervalMs,
    logger: o.logger,
    zone: g.zone,
    health: redisHealth,
    engine: o.engine,
    beforeAck: o.beforeAck,
    beforeAckRequired: o.beforeAckRequired,
  });
  return {
    keys,
    redis,
    redisHealth,
    routes,
    /** Connects and loads the table; starts whether or not Redis is up yet (routes come from the control DB or the snapshot). */
    async start(): Promise<void> {
      await redisReady(redis, 2_000);
      redisHealth.start();
      await redisHealth.probe();
      await routes.start();
    },
    /** Leaves the live set: no cutover waits for this instance any more. */
    async withdraw(): Promise<void> {
      await redis.del(keys.gatewayUpstreams(o.instanceId)).catch(() => undefined);
      await routes.stop();
    },
    async close(): Promise<void> {
      await store.close().catch(() => undefined);
      redisHealth.stop();
      redis.disconnect();
      subscriber.disconnect();
    },
  };
}
