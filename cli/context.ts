import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { loadConfig, type ConfigOverrides, type ResolvedConfig } from '../core/config/load.ts';

/** Options every command accepts. */
export interface GlobalArgs {
  config: string;
  json?: boolean;
  postgresUrl?: string;
  redisUrl?: string;
}

/** Where `strangler dev up` records the ports of the stack it runs. */
export const DEV_STATE_FILE = '.strangler/dev-stack.json';

export interface DevStackState {
  pid: number;
  postgresUrl: string;
  redisUrl: string;
  startedAt: string;
  components: Record<string, string>;
}

export function readDevState(cwd = process.cwd()): DevStackState | null {
  const file = resolve(cwd, DEV_STATE_FILE);
  if (!existsSync(file)) return null;
  try {
    const state = JSON.parse(readFileSync(file, 'utf8')) as DevStackState;
    process.kill(state.pid, 0);
    return state;
  } catch {
    return null;
  }
}

/**
 * The one place where the CLI turns flags, environment and strangler.yaml into a ResolvedConfig:
 * flags > environment > a running `dev up` stack > file > defaults. Nothing deeper reads process.env.
 * `flags`: a command's own overriding flags (`strangler gateway --zone`).
 */
export function resolveCliConfig(args: GlobalArgs, env: NodeJS.ProcessEnv = process.env, flags: ConfigOverrides = {}): ResolvedConfig {
  const dev = readDevState();
  const overrides: ConfigOverrides = {
    postgresUrl: args.postgresUrl ?? env.STRANGLER_POSTGRES_URL ?? dev?.postgresUrl,
    redisUrl: args.redisUrl ?? env.REDIS_URL ?? dev?.redisUrl,
    legacyJwtSecret: env.STRANGLER_LEGACY_JWT_SECRET,
    adminToken: env.STRANGLER_ADMIN_TOKEN,
    logLevel: env.STRANGLER_LOG_LEVEL as ConfigOverrides['logLevel'],
    gatewayZone: flags.gatewayZone ?? (env.STRANGLER_ZONE || undefined),
  };
  return loadConfig(args.config, overrides);
}

/** Prints a value as JSON (--json) or as text. */
export function output(args: { json?: boolean }, value: unknown, text: () => string): void {
  process.stdout.write(args.json ? `${JSON.stringify(value, null, 2)}\n` : `${text()}\n`);
}

/**
 * Resolves at the first SIGINT or SIGTERM, for foreground commands to stop gracefully. A second
 * one while they stop exits at once (Ctrl-C twice), with 130.
 */
export function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const first = (signal: NodeJS.Signals) => {
      process.off('SIGINT', first);
      process.off('SIGTERM', first);
      const again = () => {
        process.stderr.write('stopping at once\n');
        process.exit(130);
      };
      process.once('SIGINT', again);
      process.once('SIGTERM', again);
      resolve(signal);
    };
    process.on('SIGINT', first);
    process.on('SIGTERM', first);
  });
}
