import type { ResolvedConfig } from '../core/config/load.ts';
import { PostgresCluster, type PostgresClusterOptions } from './postgres-cluster.ts';
import { RedisServer } from './redis-server.ts';

export interface LocalStackOptions {
  postgres?: PostgresClusterOptions;
  /** Use this Redis instead of starting one (REDIS_URL, resolved by the caller). */
  redisUrl?: string;
  redisPort?: number;
}

/**
 * The private infrastructure of the tests, `strangler dev up` and the demo: one PostgreSQL
 * cluster with logical WAL and one Redis, each on a free port, both stopped by `stop()` and,
 * failing that, when this process exits.
 */
export class LocalStack {
  readonly postgres: PostgresCluster;
  readonly redis: RedisServer | null;
  readonly redisUrl: string;

  private constructor(postgres: PostgresCluster, redis: RedisServer | null, redisUrl: string) {
    this.postgres = postgres;
    this.redis = redis;
    this.redisUrl = redisUrl;
  }

  static async start(options: LocalStackOptions = {}): Promise<LocalStack> {
    const [postgres, redis] = await Promise.all([
      PostgresCluster.start(options.postgres),
      options.redisUrl ? Promise.resolve(null) : RedisServer.start({ port: options.redisPort }),
    ]);
    return new LocalStack(postgres, redis, options.redisUrl ?? redis!.url);
  }

  /** Overrides that point a config at this stack. */
  get overrides(): { postgresUrl: string; redisUrl: string } {
    return { postgresUrl: this.postgres.baseUrl, redisUrl: this.redisUrl };
  }

  /** Creates the legacy database, the control database and one database per service. */
  async createDatabases(config: ResolvedConfig): Promise<string[]> {
    const names = new Set<string>();
    const add = (url: string) => {
      const u = new URL(url);
      if (Number(u.port) === this.postgres.port) names.add(decodeURIComponent(u.pathname.slice(1)));
    };
    add(config.legacy.databaseUrl);
    add(config.control.databaseUrl);
    for (const s of config.services) add(s.databaseUrl);
    for (const name of names) await this.postgres.createDatabase(name);
    return [...names];
  }

  async stop(): Promise<void> {
    await Promise.all([this.postgres.destroy(), this.redis?.destroy()]);
  }
}
