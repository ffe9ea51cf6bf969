import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../stack/ports.ts';
import { sharedStack, uniqueName } from '../../test/harness.ts';
import { resolveConfig } from '../config/load.ts';
import { createRedisRegistry } from './redis-registry.ts';
import type { RegistryChange, ServiceInstance, ServiceRegistry } from './registry.ts';

let redis: Redis;
let registry: ServiceRegistry;
const instance = (id: string): ServiceInstance => ({ service: 'invoices', id, url: `http://127.0.0.1:9/${id}`, version: '1', zone: 'z', startedAt: new Date().toISOString() });

beforeAll(() => {
  redis = new Redis(sharedStack().redisUrl);
  registry = createRedisRegistry({ redis, keyPrefix: `${uniqueName('registry')}:` });
});
afterAll(async () => {
  await registry.close();
  redis.disconnect();
});

describe('the Redis service registry', () => {
  it('lists a registered instance while it heartbeats, and announces it up and down', async () => {
    const changes: RegistryChange[] = [];
    const unwatch = await registry.watch((c) => changes.push(c));
    const reg = await registry.register(instance('a'), { ttlMs: 600, heartbeatMs: 150 });
    await new Promise((r) => setTimeout(r, 1_000)); // longer than the TTL: heartbeats keep it
    expect((await registry.list('invoices')).map((i) => i.id)).toEqual(['a']);
    await reg.deregister();
    await reg.deregister();
    expect(await registry.list('invoices')).toEqual([]);
    await waitFor('both announcements', async () => changes.length === 2, 2_000, 10);
    expect(changes).toEqual([{ service: 'invoices', id: 'a', change: 'up' }, { service: 'invoices', id: 'a', change: 'down' }]);
    await unwatch();
  });

  it('drops an instance whose heartbeats stop once its TTL lapses (a crash), and takes it back when they resume', async () => {
    const changes: RegistryChange[] = [];
    const unwatch = await registry.watch((c) => changes.push(c));
    await registry.heartbeat(instance('b'), 300); // one heartbeat, then silence
    expect((await registry.list()).map((i) => i.id)).toEqual(['b']);
    await new Promise((r) => setTimeout(r, 450));
    expect(await registry.list('invoices')).toEqual([]);
    await registry.heartbeat(instance('b'), 300);
    expect((await registry.list('invoices')).map((i) => i.id)).toEqual(['b']);
    await waitFor('up, down (pruned once), up', async () => changes.length === 3, 2_000, 10);
    expect(changes.map((c) => c.change)).toEqual(['up', 'down', 'up']);
    await registry.deregister('invoices', 'b');
    await unwatch();
  });

  it('refuses a heartbeat that is not shorter than the TTL, in strangler.yaml and at register', async () => {
    expect(() => resolveConfig({ registry: { ttlMs: 1_000, heartbeatMs: 1_000 } })).toThrow(/registry.heartbeatMs: 1000 must be shorter than registry.ttlMs/);
    await expect(registry.register(instance('c'), { ttlMs: 500, heartbeatMs: 500 })).rejects.toThrow(/must be shorter than the TTL/);
    expect(() => resolveConfig({ services: [{ name: 'a', prefix: '/api/a', port: 6001, database: 'a', order: 1, discovery: 'registry', instances: ['http://127.0.0.1:7000'] }] })).toThrow(/static instances are not used with discovery: registry/);
  });
});
