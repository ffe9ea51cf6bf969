import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { Redis } from 'ioredis';
import type { ResolvedConfig, ResolvedService } from '../core/config/load.ts';
import type { Logger } from '../core/logger.ts';
import { backgroundDeadlineMs, boundedRedisOptions, redisReady } from '../core/redis-health.ts';
import { createRedisRegistry } from '../core/registry/redis-registry.ts';
import type { ServiceInstance } from '../core/registry/registry.ts';

export interface InstanceOptions {
  /** The URL gateways use to reach this instance (default: the address it listens on). */
  advertiseUrl?: string;
  /** Default: the toolkit's version. */
  version?: string;
  zone?: string;
}

export interface InstanceRegistration {
  instance: ServiceInstance;
  /**
   * A graceful stop, first half: leave the registry (gateways drop the instance at once) and, for
   * `discovery: registry` services, keep serving for registry.drainMs so that gateways which
   * missed the announcement stop sending at their next listing. Then close the server.
   */
  leave(): Promise<void>;
}

/** Registers a running service instance (heartbeats keep it alive; a crash lets its TTL lapse). */
export async function registerInstance(config: ResolvedConfig, service: ResolvedService, listenUrl: string, o: InstanceOptions, logger: Logger): Promise<InstanceRegistration> {
  // Every command has a deadline (a frozen Redis never answers); heartbeats that fail are retried
  // by the next one, and the entry comes back once Redis does.
  const redis = new Redis(config.redis.url, boundedRedisOptions({ commandTimeoutMs: backgroundDeadlineMs(config.redis) }));
  redis.on('error', () => undefined);
  await redisReady(redis, 2_000);
  const registry = createRedisRegistry({ redis, keyPrefix: config.redis.keyPrefix, logger });
  const port = new URL(listenUrl).port;
  const instance: ServiceInstance = {
    service: service.name,
    id: `${service.name}-${hostname()}-${port}-${randomBytes(3).toString('hex')}`,
    url: o.advertiseUrl ?? listenUrl,
    version: o.version ?? TOOLKIT_VERSION,
    zone: o.zone ?? 'local',
    startedAt: new Date().toISOString(),
  };
  const registration = await registry.register(instance, { ttlMs: config.registry.ttlMs, heartbeatMs: config.registry.heartbeatMs });
  logger.info({ instance: instance.id, url: instance.url }, 'registered');
  let leaving: Promise<void> | null = null;
  return {
    instance,
    leave() {
      leaving ??= (async () => {
        await Promise.race([registration.deregister(), new Promise((r) => setTimeout(r, 2_000))]);
        redis.disconnect();
        if (service.discovery === 'registry' && config.registry.drainMs) await new Promise((r) => setTimeout(r, config.registry.drainMs));
      })();
      return leaving;
    },
  };
}

const TOOLKIT_VERSION: string = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version;
