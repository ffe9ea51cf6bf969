import type { Redis } from 'ioredis';
import { withDeadline } from '../deadline.ts';
import type { Logger } from '../logger.ts';
import type { Registration, RegistryChange, ServiceInstance, ServiceRegistry } from './registry.ts';

export const DEFAULT_TTL_MS = 5_000;
export const DEFAULT_HEARTBEAT_MS = 1_000;
/** How long `watch` waits for its subscription before returning anyway. */
const SUBSCRIBE_WAIT_MS = 2_000;

/** The registry's keys under strangler.yaml's redis.keyPrefix. */
export function registryKeys(prefix: string) {
  return {
    /** Set: every service name that has had an instance. */
    services: `${prefix}registry:services`,
    /** Set per service: instance ids (an index; the entries themselves expire). */
    index: (service: string) => `${prefix}registry:${service}`,
    /** String per instance: its JSON, with a TTL its heartbeats refresh. */
    entry: (service: string, id: string) => `${prefix}registry:${service}:${id}`,
    /** Pub/sub: {service, id, change: up|down}. */
    changes: `${prefix}registry:changes`,
  };
}

/**
 * The registry on Redis: one key per instance with a TTL (SET PX), refreshed by heartbeats, an
 * index set per service, and change notifications on a pub/sub channel. A lapsed entry is pruned
 * from its index (and announced as down) by the first `list` that finds it gone, so watchers that
 * also poll `list` see a crashed instance leave within one TTL plus one poll.
 */
export function createRedisRegistry(options: { redis: Redis; keyPrefix: string; logger?: Logger }): ServiceRegistry {
  const { redis, logger } = options;
  const keys = registryKeys(options.keyPrefix);
  const subscribers = new Set<Redis>();
  const registrations = new Set<Registration>();

  const announce = (change: RegistryChange) => redis.publish(keys.changes, JSON.stringify(change));

  async function heartbeat(instance: ServiceInstance, ttlMs: number): Promise<void> {
    // Indexed on every beat, not only when the entry was missing: after a Redis freeze a beat
    // that timed out here may still be applied late, re-creating an entry that a lister has just
    // pruned from the index; the next beat puts it back.
    const replies = await redis
      .multi()
      .set(keys.entry(instance.service, instance.id), JSON.stringify(instance), 'PX', ttlMs, 'GET')
      .sadd(keys.services, instance.service)
      .sadd(keys.index(instance.service), instance.id)
      .exec();
    const failed = replies?.find(([err]) => err);
    if (!replies || failed) throw failed?.[0] ?? new Error('the registry heartbeat transaction was discarded');
    // New, or back after its entry lapsed (a long pause, a Redis restart): announce it.
    if (replies[0][1] === null) await announce({ service: instance.service, id: instance.id, change: 'up' });
  }

  async function deregister(service: string, id: string): Promise<void> {
    await redis.multi().del(keys.entry(service, id)).srem(keys.index(service), id).exec();
    await announce({ service, id, change: 'down' });
  }

  async function listOne(service: string): Promise<ServiceInstance[]> {
    const ids = await redis.smembers(keys.index(service));
    if (ids.length === 0) return [];
    const values = await redis.mget(ids.map((id) => keys.entry(service, id)));
    const live: ServiceInstance[] = [];
    for (let i = 0; i < ids.length; i++) {
      const value = values[i];
      if (value !== null) {
        live.push(JSON.parse(value) as ServiceInstance);
        continue;
      }
      // Its TTL lapsed: the instance died without deregistering. SREM tells who pruned it first.
      if ((await redis.srem(keys.index(service), ids[i])) === 1) await announce({ service, id: ids[i], change: 'down' });
    }
    return live.sort((a, b) => a.id.localeCompare(b.id));
  }

  return {
    async register(instance, o = {}) {
      const ttlMs = o.ttlMs ?? DEFAULT_TTL_MS;
      const heartbeatMs = o.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
      if (heartbeatMs >= ttlMs) throw new Error(`registry heartbeat (${heartbeatMs} ms) must be shorter than the TTL (${ttlMs} ms)`);
      let stopped = false;
      let failing = false;
      // Said once when heartbeats start failing and once when they work again, not every beat.
      const beat = () =>
        heartbeat(instance, ttlMs).then(
          () => {
            if (failing) logger?.info({ service: instance.service, id: instance.id }, 'registry heartbeats work again');
            failing = false;
          },
          (err: Error) => {
            if (!stopped && !failing) logger?.warn({ err: err.message, service: instance.service, id: instance.id }, `registry heartbeat failed; retrying every ${heartbeatMs} ms (the entry lapses after ${ttlMs} ms)`);
            failing = true;
          },
        );
      const timer = setInterval(() => void beat(), heartbeatMs);
      timer.unref();
      await heartbeat(instance, ttlMs).catch((err: Error) => logger?.warn({ err: err.message }, 'registry unreachable at start; heartbeats will register the instance'));
      let leaving: Promise<void> | null = null;
      const registration: Registration = {
        instance,
        deregister() {
          leaving ??= (async () => {
            stopped = true;
            clearInterval(timer);
            registrations.delete(registration);
            await deregister(instance.service, instance.id).catch((err: Error) => logger?.warn({ err: err.message }, 'deregistration failed; the entry will lapse with its TTL'));
          })();
          return leaving;
        },
      };
      registrations.add(registration);
      return registration;
    },
    deregister,
    heartbeat,
    async list(service) {
      if (service) return listOne(service);
      const services = (await redis.smembers(keys.services)).sort();
      return (await Promise.all(services.map(listOne))).flat();
    },
    async watch(listener) {
      // A connection that waits: its SUBSCRIBE is sent whenever Redis answers (no command deadline).
      const sub = redis.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null, commandTimeout: undefined });
      sub.on('error', () => undefined);
      subscribers.add(sub);
      sub.on('message', (channel: string, message: string) => {
        if (channel !== keys.changes) return;
        try {
          listener(JSON.parse(message) as RegistryChange);
        } catch (err) {
          logger?.warn({ err: (err as Error).message }, 'registry change not understood');
        }
      });
      // Not awaited past a bound: a frozen Redis must not hold up the caller (the subscription
      // completes once Redis answers; meanwhile watchers rely on their periodic listing).
      await withDeadline(sub.subscribe(keys.changes), SUBSCRIBE_WAIT_MS, 'Redis (SUBSCRIBE to registry changes)').catch((err: Error) =>
        logger?.warn({ err: err.message }, 'registry changes not watched yet; relying on the periodic listing until Redis answers'),
      );
      return async () => {
        subscribers.delete(sub);
        sub.disconnect();
      };
    },
    async close() {
      for (const r of [...registrations]) await r.deregister();
      for (const sub of subscribers) sub.disconnect();
      subscribers.clear();
    },
  };
}
