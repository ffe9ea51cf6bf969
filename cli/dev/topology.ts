import { resolve } from 'node:path';
import type { ConfigOverrides, ResolvedConfig } from '../../core/config/load.ts';
import { generateSecret, SECRETS, secretValue, type SecretName } from '../../core/config/secrets.ts';
import type { Logger } from '../../core/logger.ts';
import { LocalStack } from '../../stack/index.ts';
import { migrateControl } from '../../migrations/control/index.ts';
import { startGateway } from '../../gateway/start.ts';
import { runSetup, stackEnv, startProcess } from './processes.ts';

export interface RunningComponent {
  name: string;
  url: string;
  /** A process of dev.processes: its process group (dev down kills it if dev up cannot). */
  pid?: number;
  /** What `dev status` asks: the health path dev up waited on (none: only whether it runs). */
  health?: string;
  close(): Promise<void>;
}

export interface Topology {
  stack: LocalStack;
  config: ResolvedConfig;
  /** The secrets the stack runs with: strangler.yaml's, else generated for this stack alone. */
  secrets: Record<SecretName, string>;
  /** The environment every dev process gets (docs/runbook.md#the-local-stack). */
  env: Record<string, string>;
  components: RunningComponent[];
  /** Where each part listens, for printing. */
  where(): Record<string, string>;
  /** The health URL of each part that has one (RunningComponent.health). */
  health(): Record<string, string>;
  /** The processes to kill when stopping fails: Postgres, Redis, each dev process's group. */
  pids(): Record<string, number>;
  stop(): Promise<void>;
}

export interface TopologyOptions {
  logger: Logger;
  /** REDIS_URL, when the engineer wants an existing Redis. */
  redisUrl?: string;
  /** Called with a line of progress. */
  onStep?: (line: string) => void;
  /** Only the private Postgres and Redis and the databases of strangler.yaml (dev up --infra-only). */
  infraOnly?: boolean;
  /** Where the dev processes' output goes (one file each). */
  logDir?: string;
  /** Runs once the databases exist, before dev.setup and dev.processes (the demo seeds here). */
  beforeProcesses?: (config: ResolvedConfig) => Promise<void>;
  /** Overrides strangler.yaml's dev.setup. */
  setup?: string[];
}

/** Longest a component may take to stop before the next one is stopped anyway (a dependency it waits on may be gone). */
const STOP_DEADLINE_MS = 15_000;

/**
 * Starts what `strangler dev up` and the demo run: the private Postgres (wal_level=logical) and
 * Redis, every database strangler.yaml names, then (unless infraOnly) dev.setup, the
 * processes of dev.processes in order (the monolith and services, any language), the control
 * schema and the gateway, with the secrets of strangler.yaml or, where it has none, random ones.
 * Stops in reverse, each part within a deadline, so a stack whose Redis or Postgres is already
 * gone still stops.
 */
export async function startTopology(fileConfig: (o: ConfigOverrides) => ResolvedConfig, options: TopologyOptions): Promise<Topology> {
  const step = options.onStep ?? (() => undefined);
  const stack = await LocalStack.start({ redisUrl: options.redisUrl });
  const components: RunningComponent[] = [];
  // The gateway (and anything else in this process) first, then every dev process at once
  // (each is killed if it does not stop in time), then Postgres and Redis; each within a
  // deadline, so a stack whose Redis or Postgres is already gone still stops.
  const stop = async () => {
    const within = (name: string, p: Promise<unknown>) =>
      Promise.race([p.catch((err) => options.logger.error({ err, component: name }, 'stop failed')), new Promise((r) => setTimeout(r, STOP_DEADLINE_MS).unref())]);
    const stopping = [...components].reverse();
    components.length = 0;
    for (const c of stopping.filter((c) => !c.pid)) await within(c.name, c.close());
    await Promise.all(stopping.filter((c) => c.pid).map((c) => within(c.name, c.close())));
    await within('postgres and redis', stack.stop());
  };
  try {
    // SECURITY: no secret is shared between stacks: each makes its own, unless strangler.yaml or the environment gives one.
    const fromFile = fileConfig(stack.overrides);
    const secrets = Object.fromEntries((Object.keys(SECRETS) as SecretName[]).map((name) => [name, secretValue(fromFile, name) ?? generateSecret()])) as Record<SecretName, string>;
    const config = fileConfig({ ...stack.overrides, ...secrets });
    const env = stackEnv(config, secrets);
    step(`postgres  ${stack.postgres.baseUrl} (wal_level=logical)`);
    step(`redis     ${stack.redisUrl}`);
    const databases = await stack.createDatabases(config);
    step(`databases ${databases.join(', ')}`);
    const topology: Topology = {
      stack,
      config,
      secrets,
      env,
      components,
      health: () => Object.fromEntries(components.filter((c) => c.health).map((c) => [c.name, c.health!])),
      where: () => ({
        postgres: stack.postgres.baseUrl,
        redis: stack.redisUrl,
        ...Object.fromEntries(components.map((c) => [c.name, c.url])),
      }),
      pids: () => ({
        ...(stack.postgres.pid ? { postgres: stack.postgres.pid } : {}),
        ...(stack.redis?.pid ? { redis: stack.redis.pid } : {}),
        ...Object.fromEntries(components.filter((c) => c.pid).map((c) => [c.name, -c.pid!])),
      }),
      stop,
    };
    if (options.infraOnly) return topology;

    await options.beforeProcesses?.(config);
    const logDir = options.logDir ?? resolve('.strangler/logs');
    const setup = options.setup ?? config.dev.setup;
    for (const [i, command] of setup.entries()) {
      const t = Date.now();
      await runSetup(config, command, env, logDir, i);
      step(`setup     ${command} (${Date.now() - t} ms)`);
    }
    for (const spec of config.dev.processes) {
      const running = await startProcess(config, spec, env, logDir);
      const health = running.url && spec.health ? `${running.url}${spec.health}` : undefined;
      components.push({ name: spec.name, url: running.url ?? `pid ${running.pid}`, pid: running.pid, health, close: () => running.stop() });
      step(`${spec.name.padEnd(9)} ${running.url ?? `pid ${running.pid}`} (log ${running.log})`);
    }
    await migrateControl(config.control.databaseUrl, config.control.schema);
    // gateway.engine picks the data plane: the Node gateway, or HAProxy with its agent.
    const gateway = config.gateway.engine === 'haproxy' ? await (await import('../../gateway/haproxy/agent.ts')).startHaproxyEngine(config, { logger: options.logger }) : await startGateway(config, { logger: options.logger });
    components.push({ name: 'gateway', url: gateway.url, health: `${gateway.url}/healthz`, close: gateway.stop });
    step(`gateway   ${gateway.url} (${config.gateway.engine}, route table v${gateway.routes.loaded ? gateway.routes.current().version : '?'})`);
    return topology;
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}
