import { Redis } from 'ioredis';
import pg from 'pg';
import type { ResolvedConfig } from '../core/config/load.ts';
import { commitRouteChange, publishAndWait, type Propagation } from '../cutover/route-change.ts';
import { redisKeys } from '../gateway/redis-keys.ts';
import type { Route } from '../gateway/route-types.ts';

/** Changes routes the way the control plane does: one transaction, notify, wait for acks. */
export function routeWriter(config: ResolvedConfig) {
  const redis = new Redis(config.redis.url);
  const keys = redisKeys(config.redis.keyPrefix);
  return {
    keys,
    redis,
    set(...routes: Array<Pick<Route, 'prefix' | 'mode'> & Partial<Route>>): Promise<Propagation> {
      return this.setWith({}, ...routes);
    },
    /** As `set`, with the lease a fence among the routes gets. */
    async setWith(options: { fenceLeaseMs?: number }, ...routes: Array<Pick<Route, 'prefix' | 'mode'> & Partial<Route>>): Promise<Propagation> {
      const client = new pg.Client({ connectionString: config.control.databaseUrl });
      await client.connect();
      try {
        const full = routes.map((r) => ({ service: config.services.find((s) => s.prefix === r.prefix)?.name ?? 'unknown', weight: 0, ...r }) as Route);
        const { version } = await commitRouteChange(client, config.control.schema, full, { actor: 'test', command: 'test', outcome: 'applied' }, options);
        return await publishAndWait(redis, keys, version, { timeoutMs: 5_000, liveWithinMs: 2_000 });
      } finally {
        await client.end();
      }
    },
    close: () => redis.quit().then(() => undefined),
  };
}
