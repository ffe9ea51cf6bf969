import type { Argv, CommandModule } from 'yargs';
import { StranglerError } from '../../core/errors.ts';
import { output, resolveCliConfig, type GlobalArgs } from '../context.ts';

/** `strangler services`: every service's instances, as the registry and the gateways see them. */
export const servicesCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'services',
  describe: 'instances of every service: registry, health, ejection, in-flight requests, recent error rate',
  builder: (y: Argv<GlobalArgs>) => y,
  handler: async (args) => {
    const config = await resolveCliConfig(args);
    const { Redis } = await import('ioredis');
    const { redisKeys } = await import('../../gateway/redis-keys.ts');
    const { formatInstances, readInstances } = await import('../../gateway/instances-report.ts');
    const redis = new Redis(config.redis.url, { maxRetriesPerRequest: 1, connectTimeout: 2_000, retryStrategy: () => null, lazyConnect: true });
    redis.on('error', () => undefined);
    try {
      await redis.connect().catch((err: Error) => {
        throw new StranglerError(`cannot reach Redis at ${config.redis.url} (${err.message}); the registry and the gateways' views live there: pass --redis-url or start the stack`, 'UPSTREAM_UNAVAILABLE');
      });
      const services = await readInstances(config, redis, redisKeys(config.redis.keyPrefix));
      output(args, services, () => formatInstances(services));
    } finally {
      redis.disconnect();
    }
  },
};
