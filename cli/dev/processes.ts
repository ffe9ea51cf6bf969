import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, closeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { ResolvedConfig } from '../../core/config/load.ts';
import type { DevProcessConfig } from '../../core/config/schema.ts';
import { StranglerError } from '../../core/errors.ts';
import { isListening } from '../../stack/ports.ts';
import { reapWithParent } from '../../stack/reaper.ts';

/** A process of strangler.yaml's dev.processes, running. */
export interface RunningProcess {
  name: string;
  /** Its process group (it and whatever it started). */
  pid: number;
  url: string | null;
  log: string;
  /** SIGTERM to its group; SIGKILL once graceMs has passed. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * The values every setup command and process gets in its environment: where the stack's
 * Postgres, Redis and databases are, and its secrets. Pure.
 */
export function stackEnv(config: ResolvedConfig, secrets: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {
    STRANGLER_POSTGRES_URL: config.postgres.url,
    REDIS_URL: config.redis.url,
    STRANGLER_LEGACY_DATABASE_URL: config.legacy.databaseUrl,
    STRANGLER_CONTROL_DATABASE_URL: config.control.databaseUrl,
    STRANGLER_GATEWAY_URL: `http://127.0.0.1:${config.gateway.port}`,
    STRANGLER_LEGACY_JWT_SECRET: secrets.legacyJwtSecret,
    STRANGLER_ADMIN_TOKEN: secrets.adminToken,
  };
  if (config.file) env.STRANGLER_CONFIG = resolve(config.file);
  for (const s of config.services) env[`STRANGLER_${s.name.toUpperCase().replace(/-/g, '_')}_DATABASE_URL`] = s.databaseUrl;
  return env;
}

/** A process's own env entries with `${VAR}` taken from the stack's values (or the caller's environment). Pure. */
export function expandEnv(name: string, own: Record<string, string>, values: Record<string, string | undefined>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(own).map(([key, value]) => [
      key,
      value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, variable: string) => {
        const v = values[variable];
        if (v === undefined) throw new StranglerError(`dev.processes "${name}": env ${key} names \${${variable}}, which is not set; the stack sets: ${Object.keys(stackEnvNames).join(', ')}`, 'CONFIG_INVALID');
        return v;
      }),
    ]),
  );
}
const stackEnvNames = { STRANGLER_POSTGRES_URL: 1, REDIS_URL: 1, STRANGLER_LEGACY_DATABASE_URL: 1, STRANGLER_CONTROL_DATABASE_URL: 1, 'STRANGLER_<SERVICE>_DATABASE_URL': 1, STRANGLER_GATEWAY_URL: 1, STRANGLER_LEGACY_JWT_SECRET: 1, STRANGLER_ADMIN_TOKEN: 1, STRANGLER_CONFIG: 1, PORT: 1 };

/** The directory dev.cwd (or a process's cwd) names, relative to strangler.yaml's directory. */
export function devDirectory(config: ResolvedConfig, cwd?: string): string {
  const base = config.file ? resolve(config.file, '..') : process.cwd();
  return resolve(base, config.dev.cwd, cwd ?? '.');
}

/** Runs one dev.setup command to its end; a failure names the command and its log. */
export async function runSetup(config: ResolvedConfig, command: string, env: Record<string, string>, logDir: string, index: number): Promise<void> {
  const log = join(logDir, `setup-${index + 1}.log`);
  const child = spawnLogged(command, devDirectory(config), env, log);
  const code = await new Promise<number | null>((resolveExit) => child.once('exit', (c) => resolveExit(c)));
  if (code !== 0) throw new StranglerError(`dev.setup[${index}] (${command}) exited with ${code}; see ${log}`, 'STACK_FAILED');
}

/**
 * Starts one dev process and waits until it listens on its port (and answers its health path
 * 2xx); one without a port is taken as started at once. Refuses a port something else holds.
 */
export async function startProcess(config: ResolvedConfig, spec: DevProcessConfig, env: Record<string, string>, logDir: string): Promise<RunningProcess> {
  if (spec.port !== undefined && (await isListening(spec.port))) {
    throw new StranglerError(`port ${spec.port} of dev process "${spec.name}" is taken by another program; stop it, or change the port in strangler.yaml (dev.processes)`, 'CONFLICT');
  }
  const log = join(logDir, `${spec.name}.log`);
  const ownEnv = expandEnv(spec.name, spec.env, { ...process.env, ...env });
  const child = spawnLogged(spec.command, devDirectory(config, spec.cwd), { ...env, ...(spec.port !== undefined ? { PORT: String(spec.port) } : {}), ...ownEnv }, log);
  const pid = child.pid!;
  // Its group must not outlive dev up, even when dev up is SIGKILLed.
  reapWithParent(-pid, 'TERM');
  let exited: number | string | null | undefined;
  child.once('exit', (code, signal) => (exited = code ?? signal));
  const url = spec.port !== undefined ? `http://127.0.0.1:${spec.port}` : null;
  const running: RunningProcess = {
    name: spec.name,
    pid,
    url,
    log,
    async stop(graceMs = 10_000) {
      if (exited !== undefined) return;
      const gone = new Promise<void>((r) => child.once('exit', () => r()));
      signalGroup(pid, 'SIGTERM');
      const killed = await Promise.race([gone.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), graceMs).unref())]);
      // A process that does not stop in time (a dependency it waits on is gone) is killed, its children with it.
      if (killed) {
        signalGroup(pid, 'SIGKILL');
        await gone;
      }
    },
  };
  if (spec.port === undefined) return running;
  const deadline = Date.now() + spec.readyTimeoutMs;
  let last = 'not listening';
  while (Date.now() < deadline) {
    if (exited !== undefined) throw new StranglerError(`dev process "${spec.name}" (${spec.command}) exited with ${exited} before it was ready; see ${log}`, 'STACK_FAILED');
    if (await isListening(spec.port)) {
      if (!spec.health) return running;
      try {
        const res = await fetch(`${url}${spec.health}`, { signal: AbortSignal.timeout(2_000) });
        if (res.ok) return running;
        last = `${spec.health} answered ${res.status}`;
      } catch (err) {
        last = `${spec.health}: ${(err as Error).message}`;
      }
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  await running.stop(2_000);
  throw new StranglerError(`dev process "${spec.name}" was not ready on port ${spec.port} within ${spec.readyTimeoutMs} ms (${last}); see ${log}`, 'STACK_FAILED');
}

/** `sh -c command` in its own process group, output to a log file. */
function spawnLogged(command: string, cwd: string, env: Record<string, string>, log: string): ChildProcess {
  mkdirSync(resolve(log, '..'), { recursive: true });
  const fd = openSync(log, 'w');
  try {
    return spawn('sh', ['-c', command], { cwd, env: { ...process.env, ...env }, detached: true, stdio: ['ignore', fd, fd] });
  } finally {
    closeSync(fd);
  }
}

/** Signals a process group; one already gone is fine. */
export function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // already gone
  }
}
