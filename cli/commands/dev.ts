import { spawn } from 'node:child_process';
import { mkdirSync, openSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { StranglerError } from '../../core/errors.ts';
import { DEV_STATE_FILE, output, publicDevState, readDevState, secretOverrides, type DevStackState, type GlobalArgs } from '../context.ts';
import type { Topology } from '../dev/topology.ts';

interface DevArgs extends GlobalArgs {
  action: 'up' | 'down' | 'status';
  detach?: boolean;
  infraOnly?: boolean;
}

/** `strangler dev up|down|status`: the local stack on this machine. */
export const devCommand: CommandModule<GlobalArgs, DevArgs> = {
  command: 'dev <action>',
  describe:
    'the local stack: up (in the foreground unless --detach) | down | status. up starts a private PostgreSQL (wal_level=logical) and Redis on free ports, ' +
    "creates the databases strangler.yaml names, runs its dev.setup commands, starts its dev.processes in order (your monolith and services, any language; " +
    'the reference example in the shipped strangler.yaml) and the gateway on gateway.port. --infra-only: Postgres and Redis and the databases alone.',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .positional('action', { choices: ['up', 'down', 'status'] as const, demandOption: true })
      .option('detach', { type: 'boolean', describe: 'up: run in the background; stop with `strangler dev down`' })
      .option('infra-only', { type: 'boolean', describe: 'up: only the private Postgres (wal_level=logical) and Redis, with the databases of strangler.yaml; prints their URLs and the lines to export' })
      .example('$0 dev up --detach', 'Postgres, Redis, the databases, dev.setup, dev.processes and the gateway, then return')
      .example('$0 dev up --infra-only --detach', 'just Postgres and Redis, for a monolith you run yourself')
      .example('$0 dev down', 'stop everything dev up started, even when its Redis or Postgres is already gone') as unknown as Argv<DevArgs>,
  handler: async (args) => {
    switch (args.action) {
      case 'up':
        return args.detach ? upDetached(args) : up(args);
      case 'down':
        return down(args);
      case 'status':
        return status(args);
    }
  },
};

async function up(args: DevArgs): Promise<void> {
  const running = readDevState();
  if (running) throw new StranglerError(`a dev stack is already running (pid ${running.pid}); run: strangler dev down`, 'CONFLICT');
  const { loadConfig } = await import('../../core/config/load.ts');
  const { createLogger } = await import('../../core/logger.ts');
  const fileConfig = loadConfig(args.config); // validate before starting anything
  const logger = createLogger('dev', fileConfig.logLevel === 'info' ? 'warn' : fileConfig.logLevel);
  const print = (line: string) => process.stderr.write(`  ${line}\n`);
  process.stderr.write(args.infraOnly ? 'starting Postgres and Redis\n' : 'starting the local stack\n');
  // Heavy modules load only when the command runs, so `strangler --help` stays fast.
  const { startTopology } = await import('../dev/topology.ts');
  const { recordDevStack } = await import('../dev/state.ts');
  // Secrets set in the environment are the stack's too (recorded in its state); the rest are generated.
  const topology = await startTopology((o) => loadConfig(args.config, { ...secretOverrides(args, process.env), ...o }), {
    logger,
    redisUrl: process.env.REDIS_URL,
    onStep: print,
    infraOnly: args.infraOnly,
    logDir: resolve('.strangler/logs'),
  });
  const { state, remove } = recordDevStack(topology, { infraOnly: args.infraOnly, exports: infraEnv(topology) });
  output(args, publicDevState(state), () => `\n${upMessage(state)}; stop with Ctrl-C or: strangler dev down`);

  // Stay up until told (with --infra-only nothing else keeps this process alive).
  const alive = setInterval(() => undefined, 60_000);
  await new Promise<void>((resolveStop) => {
    const onSignal = () => resolveStop();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  });
  clearInterval(alive);
  process.stderr.write('stopping the local stack\n');
  await topology.stop();
  remove();
  process.stderr.write('stopped\n');
  process.exit(0);
}

/** What a monolith run by hand needs to use the stack (dev up --infra-only). */
function infraEnv(topology: Topology): Record<string, string> {
  const { STRANGLER_POSTGRES_URL, REDIS_URL, STRANGLER_LEGACY_DATABASE_URL, STRANGLER_CONTROL_DATABASE_URL } = topology.env;
  const services = Object.fromEntries(Object.entries(topology.env).filter(([k]) => /^STRANGLER_.+_DATABASE_URL$/.test(k) && !['STRANGLER_LEGACY_DATABASE_URL', 'STRANGLER_CONTROL_DATABASE_URL'].includes(k)));
  return { STRANGLER_POSTGRES_URL, REDIS_URL, STRANGLER_LEGACY_DATABASE_URL, STRANGLER_CONTROL_DATABASE_URL, ...services };
}

/** Where each part listens and, for --infra-only, the lines to export. */
function upMessage(state: DevStackState): string {
  return state.infraOnly
    ? `Postgres and Redis are up:\n${table(state.components)}\n\nfor your monolith and services:\n${exportLines(state.exports ?? {})}\n\nstrangler commands in this folder now use them`
    : `the local stack is up:\n${table(state.components)}\n\nstrangler commands in this folder now use it`;
}

function exportLines(env: Record<string, string>): string {
  return Object.entries(env)
    .map(([k, v]) => `  export ${k}='${v}'`)
    .join('\n');
}

async function upDetached(args: DevArgs): Promise<void> {
  const running = readDevState();
  if (running) throw new StranglerError(`a dev stack is already running (pid ${running.pid}); run: strangler dev down`, 'CONFLICT');
  const { loadConfig } = await import('../../core/config/load.ts');
  loadConfig(args.config); // validate before starting anything
  mkdirSync('.strangler', { recursive: true });
  const log = resolve('.strangler/dev-stack.log');
  const fd = openSync(log, 'w');
  const argv = process.argv.slice(1).filter((a) => a !== '--detach');
  const child = spawn(process.execPath, [...process.execArgv, ...argv], { detached: true, stdio: ['ignore', fd, fd] });
  child.unref();
  // No deadline of its own: the stack fails by itself when a process is not ready in time (dev.processes[].readyTimeoutMs).
  for (;;) {
    const state = readDevState();
    if (state) {
      output(args, publicDevState(state), () => `${upMessage(state)} (pid ${state.pid}, log ${log}); stop with: strangler dev down`);
      return;
    }
    if (child.exitCode !== null || child.signalCode !== null) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new StranglerError(`the local stack did not come up; see ${log}`, 'STACK_FAILED');
}

/** How long `dev down` lets the stack stop itself before killing what it recorded. */
const DOWN_GRACE_MS = 45_000;

/**
 * Stops the stack dev up runs: SIGTERM to dev up, which stops the gateway, its processes and
 * Postgres and Redis, each within a deadline. Should dev up not be done in time (or be gone),
 * every process it recorded is killed here, so nothing it started keeps a port.
 */
async function down(args: DevArgs): Promise<void> {
  const state = readDevState(process.cwd(), { evenIfStopped: true });
  if (!state) {
    output(args, { stopped: false }, () => 'no dev stack is running');
    return;
  }
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  let killed = false;
  if (alive(state.pid)) {
    process.kill(state.pid, 'SIGTERM');
    const deadline = Date.now() + DOWN_GRACE_MS;
    while (alive(state.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    if (alive(state.pid)) {
      process.kill(state.pid, 'SIGKILL');
      killed = true;
    }
  }
  // Killed: what it had not stopped yet goes too (its processes, Postgres, Redis). Only now, while
  // these ids are still theirs: a stack whose process is long gone was reaped with it (stack/reaper.ts).
  if (killed) {
    for (const pid of Object.values(state.pids ?? {})) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already stopped
      }
    }
  }
  rmSync(resolve(DEV_STATE_FILE), { force: true });
  output(args, { stopped: true, pid: state.pid, killed }, () => `stopped the dev stack (pid ${state.pid})${killed ? '; what did not stop in time was killed' : ''}`);
}

async function status(args: DevArgs): Promise<void> {
  const state = readDevState();
  if (!state) {
    output(args, { running: false }, () => 'no dev stack is running; start one with: strangler dev up');
    process.exitCode = 1;
    return;
  }
  // Each component is asked on the health path it was started with (a monolith's own, the
  // gateway's /healthz); one without a path is only checked to be running.
  const health: Record<string, string> = {};
  for (const name of Object.keys(state.components)) {
    const url = state.health?.[name];
    if (!url) {
      health[name] = processRuns(state.pids?.[name]);
      continue;
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      health[name] = res.ok ? 'healthy' : `unhealthy (${new URL(url).pathname} answered ${res.status})`;
    } catch (err) {
      health[name] = `down (${(err as Error).message})`;
    }
  }
  output(args, { running: true, ...publicDevState(state), health }, () =>
    `dev stack pid ${state.pid}, up since ${state.startedAt}\n${table(state.components, health)}`,
  );
}

/** `pid`: a process, or a process group when negative (as DevStackState.pids records them). */
function processRuns(pid: number | undefined): string {
  if (pid === undefined) return 'running';
  try {
    process.kill(pid, 0);
    return 'running';
  } catch {
    return 'stopped';
  }
}

function table(components: Record<string, string>, extra?: Record<string, string>): string {
  const width = Math.max(...Object.keys(components).map((k) => k.length));
  return Object.entries(components)
    .map(([k, v]) => `  ${k.padEnd(width)}  ${v}${extra?.[k] ? `  ${extra[k]}` : ''}`)
    .join('\n');
}

