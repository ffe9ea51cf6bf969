import type { ConfigOverrides, ResolvedConfig } from '../../core/config/load.ts';
import { generateSecret, SECRETS, secretValue, type SecretName } from '../../core/config/secrets.ts';
import type { Logger } from '../../core/logger.ts';
import { migrateLegacy, seedLegacy, startLegacyApp } from '../../examples/reference/monolith/index.ts';
import { LocalStack } from '../../stack/index.ts';
import { migrateControl } from '../../migrations/control/index.ts';
import { startGateway } from '../../gateway/start.ts';
import { startService } from '../../examples/reference/services/app.ts';

export interface RunningComponent {
  name: string;
  url: string;
  close(): Promise<void>;
}

export interface Topology {
  stack: LocalStack;
  config: ResolvedConfig;
  /** The secrets the stack runs with: strangler.yaml's, else generated for this stack alone. */
  secrets: Record<SecretName, string>;
  components: RunningComponent[];
  /** Where each part listens, for printing. */
  where(): Record<string, string>;
  stop(): Promise<void>;
}

export interface TopologyOptions {
  logger: Logger;
  /** Seed the legacy database after migrating it. */
  seed?: { users: number; invoices: number; seed?: number };
  /** REDIS_URL, when the engineer wants an existing Redis. */
  redisUrl?: string;
  /** Called with a line of progress. */
  onStep?: (line: string) => void;
  /** More instances of `discovery: registry` services, on free ports (name → how many more). */
  extraInstances?: Record<string, number>;
}

/**
 * Starts what `strangler dev up` and the demo run: the private Postgres and Redis, every
 * database of strangler.yaml, the legacy monolith, the gateway and every service on their
 * configured ports, with the secrets of strangler.yaml or, where it has none, random ones.
 * Stops in reverse.
 */
export async function startTopology(fileConfig: (o: ConfigOverrides) => ResolvedConfig, options: TopologyOptions): Promise<Topology> {
  const step = options.onStep ?? (() => undefined);
  const stack = await LocalStack.start({ redisUrl: options.redisUrl });
  const components: RunningComponent[] = [];
  const stop = async () => {
    for (const c of [...components].reverse()) await c.close().catch((err) => options.logger.error({ err, component: c.name }, 'close failed'));
    components.length = 0;
    await stack.stop();
  };
  try {
    // SECURITY: no secret is shared between stacks: each makes its own, unless strangler.yaml or the environment gives one.
    const fromFile = fileConfig(stack.overrides);
    const secrets = Object.fromEntries((Object.keys(SECRETS) as SecretName[]).map((name) => [name, secretValue(fromFile, name) ?? generateSecret()])) as Record<SecretName, string>;
    const config = fileConfig({ ...stack.overrides, ...secrets });
    step(`postgres  ${stack.postgres.baseUrl} (wal_level=logical)`);
    step(`redis     ${stack.redisUrl}`);
    const databases = await stack.createDatabases(config);
    step(`databases ${databases.join(', ')}`);
    await migrateLegacy(config.legacy.databaseUrl);
    if (options.seed) {
      const t = Date.now();
      await seedLegacy(config.legacy.databaseUrl, options.seed);
      step(`seeded    ${options.seed.users} users, ${options.seed.invoices} invoices in ${Date.now() - t} ms`);
    }
    const legacy = await startLegacyApp(config, { logger: options.logger });
    components.push({ name: 'legacy', url: legacy.url, close: legacy.close });
    step(`legacy    ${legacy.url}`);
    await migrateControl(config.control.databaseUrl, config.control.schema);
    const gateway = await startGateway(config, { logger: options.logger });
    components.push({ name: 'gateway', url: gateway.url, close: gateway.stop });
    step(`gateway   ${gateway.url} (route table v${gateway.routes.current().version})`);
    for (const service of config.services) {
      const running = await startService(config, service.name, { logger: options.logger });
      components.push({ name: service.name, url: running.url, close: running.close });
    }
    const extras: string[] = [];
    for (const [name, count] of Object.entries(options.extraInstances ?? {})) {
      if (config.services.find((s) => s.name === name)?.discovery !== 'registry') continue;
      for (let i = 2; i < count + 2; i++) {
        const running = await startService(config, name, { port: 0, logger: options.logger });
        components.push({ name: `${name}#${i}`, url: running.url, close: running.close });
        extras.push(`${name}#${i} :${running.port}`);
      }
    }
    step(`services  ${config.services.map((s) => `${s.name} :${s.port}`).concat(extras).join(', ')}`);
    return {
      stack,
      config,
      secrets,
      components,
      where: () => ({
        postgres: stack.postgres.baseUrl,
        redis: stack.redisUrl,
        ...Object.fromEntries(components.map((c) => [c.name, c.url])),
      }),
      stop,
    };
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}
