import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import type { ConfigOverrides, ResolvedConfig } from '../core/config/load.ts';
import { readSecretFile, SECRETS, type SecretName } from '../core/config/secrets.ts';
import { StranglerError } from '../core/errors.ts';

/** Options every command accepts. */
export interface GlobalArgs {
  config: string;
  json?: boolean;
  postgresUrl?: string;
  redisUrl?: string;
  /** Commands that need secrets (secretFileOptions): files holding them. */
  legacyJwtSecretFile?: string;
  adminTokenFile?: string;
}

/**
 * The file flags of the secrets, for the commands that need them (gateway, service, legacy).
 * SECURITY: a file, never the secret itself as a flag value (the process list shows those).
 */
export function secretFileOptions<T>(y: Argv<T>): Argv<T> {
  return y
    .option('legacy-jwt-secret-file', { type: 'string', describe: `file holding legacy.jwtSecret (env ${SECRETS.legacyJwtSecret.env})` })
    .option('admin-token-file', { type: 'string', describe: `file holding gateway.adminToken (env ${SECRETS.adminToken.env})` });
}

/** Where `strangler dev up` records the ports of the stack it runs. */
export const DEV_STATE_FILE = '.strangler/dev-stack.json';

export interface DevStackState {
  pid: number;
  postgresUrl: string;
  redisUrl: string;
  startedAt: string;
  components: Record<string, string>;
  /** The URL `dev status` asks of each component that has a health path (dev.processes[].health; the gateway's /healthz). */
  health?: Record<string, string>;
  /** Processes to kill when the stack's own process cannot stop it: Postgres, Redis, each dev process (negative: a process group). */
  pids?: Record<string, number>;
  /** Started with --infra-only: Postgres and Redis alone. */
  infraOnly?: boolean;
  /** What a monolith or service run by hand needs to use the stack (printed as lines to export). */
  exports?: Record<string, string>;
  /** The stack's own secrets, generated at `dev up` (the file is readable by its owner only). */
  secrets?: Record<SecretName, string>;
}

/** The state without its secrets, for printing. */
export function publicDevState(state: DevStackState): Omit<DevStackState, 'secrets'> {
  const { secrets, ...rest } = state;
  void secrets;
  return rest;
}

/** The running dev stack of this folder; `evenIfStopped`: also one whose process is gone (dev down cleans up after it). */
export function readDevState(cwd = process.cwd(), o: { evenIfStopped?: boolean } = {}): DevStackState | null {
  const file = resolve(cwd, DEV_STATE_FILE);
  if (!existsSync(file)) return null;
  try {
    const state = JSON.parse(readFileSync(file, 'utf8')) as DevStackState;
    if (!o.evenIfStopped) process.kill(state.pid, 0);
    return state;
  } catch {
    return null;
  }
}

let lastResolved: ResolvedConfig | null = null;

/** The configuration this command resolved (null before it did): for saying which dependency an error is about. */
export function lastResolvedConfig(): ResolvedConfig | null {
  return lastResolved;
}

/**
 * The one place where the CLI turns flags, environment and strangler.yaml into a ResolvedConfig:
 * flags > environment > a running `dev up` stack > file > defaults. Nothing deeper reads process.env.
 * `flags`: a command's own overriding flags (`strangler gateway --zone`).
 */
export async function resolveCliConfig(args: GlobalArgs, env: NodeJS.ProcessEnv = process.env, flags: ConfigOverrides = {}): Promise<ResolvedConfig> {
  // Loaded here, not at the top: the schema and YAML parser are most of what `--help` would
  // otherwise load (issue 23: start-up).
  const { loadConfig } = await import('../core/config/load.ts');
  const dev = readDevState();
  const overrides: ConfigOverrides = {
    postgresUrl: args.postgresUrl ?? env.STRANGLER_POSTGRES_URL ?? dev?.postgresUrl,
    redisUrl: args.redisUrl ?? env.REDIS_URL ?? dev?.redisUrl,
    ...secretOverrides(args, env, dev),
    logLevel: env.STRANGLER_LOG_LEVEL as ConfigOverrides['logLevel'],
    gatewayZone: flags.gatewayZone ?? (env.STRANGLER_ZONE || undefined),
  };
  lastResolved = loadConfig(args.config, overrides);
  return lastResolved;
}

/** Each secret from its file flag, else the environment, else a running dev stack (else strangler.yaml). */
export function secretOverrides(args: Pick<GlobalArgs, 'legacyJwtSecretFile' | 'adminTokenFile'>, env: NodeJS.ProcessEnv, dev: DevStackState | null = null): ConfigOverrides {
  const out: ConfigOverrides = { secretSources: {} };
  const files: Record<SecretName, string | undefined> = { legacyJwtSecret: args.legacyJwtSecretFile, adminToken: args.adminTokenFile };
  for (const name of Object.keys(SECRETS) as SecretName[]) {
    const { env: variable, flag } = SECRETS[name];
    const file = files[name];
    if (file) {
      out[name] = readSecretFile(file, flag);
      out.secretSources![name] = `${flag} ${file}`;
    } else if (env[variable]) {
      out[name] = env[variable];
      out.secretSources![name] = variable;
    } else if (dev?.secrets?.[name]) {
      out[name] = dev.secrets[name];
      out.secretSources![name] = 'the dev stack';
    }
  }
  return out;
}

/** A `--port` flag: absent (the configured port), or a whole number from 0 (any free port) to 65535. */
export function checkPortFlag(port: number | undefined): void {
  if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65_535)) throw new StranglerError(`--port must be a whole number from 0 to 65535, got ${port}`, 'BAD_INPUT');
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
