import type { ResolvedConfig } from '../core/config/load.ts';
import { databaseName, ensureDatabase } from '../core/databases.ts';
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

  /**
   * Creates, when missing, the databases strangler.yaml names on this stack's cluster: the
   * legacy database, the control database and one per service (core/databases.ts).
   */
  async createDatabases(config: ResolvedConfig): Promise<string[]> {
    const urls = new Map<string, { url: string; purpose: string }>();
    const add = (url: string, purpose: string) => {
      if (Number(new URL(url).port) === this.postgres.port && !urls.has(databaseName(url))) urls.set(databaseName(url), { url, purpose });
    };
    add(config.legacy.databaseUrl, 'the legacy database');
    add(config.control.databaseUrl, 'the control database');
    for (const s of config.services) add(s.databaseUrl, `the database of ${s.name}`);
    for (const { url, purpose } of urls.values()) await ensureDatabase(url, purpose);
    return [...urls.keys()];
  }

  async stop(): Promise<void> {
    await Promise.all([this.postgres.destroy(), this.redis?.destroy()]);
  }
}
