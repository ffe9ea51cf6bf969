import { spawn } from 'node:child_process';
import { mkdirSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { loadConfig } from '../../core/config/load.ts';
import { StranglerError } from '../../core/errors.ts';
import { createLogger } from '../../core/logger.ts';
import { DEV_STATE_FILE, output, publicDevState, readDevState, resolveCliConfig, secretOverrides, type DevStackState, type GlobalArgs } from '../context.ts';

interface DevArgs extends GlobalArgs {
  action: 'up' | 'down' | 'status' | 'seed';
  users: number;
  invoices: number;
  seed: number;
  detach?: boolean;
}

/** `strangler dev up|down|status|seed`: the local stack on this machine. */
export const devCommand: CommandModule<GlobalArgs, DevArgs> = {
  command: 'dev <action>',
  describe: 'the local stack: up (start, in the foreground unless --detach) | down | status | seed',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .positional('action', { choices: ['up', 'down', 'status', 'seed'] as const, demandOption: true })
      .option('users', { type: 'number', default: 50, describe: 'seed: users to create' })
      .option('invoices', { type: 'number', default: 500, describe: 'seed: invoices to create' })
      .option('seed', { type: 'number', default: 42, describe: 'seed: PRNG seed (same seed, same data)' })
      .option('detach', { type: 'boolean', describe: 'up: run in the background; stop with `strangler dev down`' })
      .example('$0 dev up --detach', 'start Postgres, Redis and the monolith on 5001, then return')
      .example('$0 dev seed --users 100 --invoices 2000', 'fill the running legacy database') as unknown as Argv<DevArgs>,
  handler: async (args) => {
    switch (args.action) {
      case 'up':
        return args.detach ? upDetached(args) : up(args);
      case 'down':
        return down(args);
      case 'status':
        return status(args);
      case 'seed':
        return seed(args);
    }
  },
};

async function up(args: DevArgs): Promise<void> {
  const running = readDevState();
  if (running) throw new StranglerError(`a dev stack is already running (pid ${running.pid}); run: strangler dev down`, 'CONFLICT');
  const fileConfig = loadConfig(args.config); // validate before starting anything
  const logger = createLogger('dev', fileConfig.logLevel === 'info' ? 'warn' : fileConfig.logLevel);
  const print = (line: string) => process.stderr.write(`  ${line}\n`);
  process.stderr.write('starting the local stack\n');
  // Heavy modules load only when the command runs, so `strangler --help` stays fast.
  const { startTopology } = await import('../dev/topology.ts');
  // Secrets set in the environment are the stack's too (recorded in its state); the rest are generated.
  const topology = await startTopology((o) => loadConfig(args.config, { ...secretOverrides(args, process.env), ...o }), {
    logger,
    seed: { users: args.users, invoices: args.invoices, seed: args.seed },
    redisUrl: process.env.REDIS_URL,
    onStep: print,
  });
  const state: DevStackState = {
    pid: process.pid,
    postgresUrl: topology.stack.postgres.baseUrl,
    redisUrl: topology.stack.redisUrl,
    startedAt: new Date().toISOString(),
    components: topology.where(),
    secrets: topology.secrets,
  };
  const stateFile = resolve(DEV_STATE_FILE);
  mkdirSync(dirname(stateFile), { recursive: true });
  // SECURITY: the state holds the stack's secrets: created anew (a stale file keeps its mode), readable by its owner only.
  rmSync(stateFile, { force: true });
  writeFileSync(stateFile, JSON.stringify(state, null, 2), { mode: 0o600 });
  output(args, publicDevState(state), () => `\nthe local stack is up:\n${table(state.components)}\n\nstrangler commands in this folder now use it; stop with Ctrl-C or: strangler dev down`);

  await new Promise<void>((resolveStop) => {
    const onSignal = () => resolveStop();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  });
  process.stderr.write('stopping the local stack\n');
  await topology.stop();
  rmSync(stateFile, { force: true });
  process.stderr.write('stopped\n');
  process.exit(0);
}

async function upDetached(args: DevArgs): Promise<void> {
  const running = readDevState();
  if (running) throw new StranglerError(`a dev stack is already running (pid ${running.pid}); run: strangler dev down`, 'CONFLICT');
  loadConfig(args.config);
  mkdirSync('.strangler', { recursive: true });
  const log = resolve('.strangler/dev-stack.log');
  const fd = openSync(log, 'w');
  const argv = process.argv.slice(1).filter((a) => a !== '--detach');
  const child = spawn(process.execPath, [...process.execArgv, ...argv], { detached: true, stdio: ['ignore', fd, fd] });
  child.unref();
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    const state = readDevState();
    if (state) {
      output(args, publicDevState(state), () => `the local stack is up (pid ${state.pid}, log ${log}):\n${table(state.components)}\nstop with: strangler dev down`);
      return;
    }
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new StranglerError(`the local stack did not come up; see ${log}`, 'STACK_FAILED');
}

async function down(args: DevArgs): Promise<void> {
  const state = readDevState();
  if (!state) {
    rmSync(resolve(DEV_STATE_FILE), { force: true });
    output(args, { stopped: false }, () => 'no dev stack is running');
    return;
  }
  process.kill(state.pid, 'SIGTERM');
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    try {
      process.kill(state.pid, 0);
    } catch {
      output(args, { stopped: true, pid: state.pid }, () => `stopped the dev stack (pid ${state.pid})`);
      return;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new StranglerError(`the dev stack (pid ${state.pid}) did not stop within 60 s; kill it with: kill ${state.pid}`, 'STACK_FAILED');
}

async function status(args: DevArgs): Promise<void> {
  const state = readDevState();
  if (!state) {
    output(args, { running: false }, () => 'no dev stack is running; start one with: strangler dev up');
    process.exitCode = 1;
    return;
  }
  const health: Record<string, string> = {};
  for (const [name, url] of Object.entries(state.components)) {
    if (!url.startsWith('http')) {
      health[name] = 'running';
      continue;
    }
    try {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2000) });
      health[name] = res.ok ? 'healthy' : `unhealthy (${res.status})`;
    } catch (err) {
      health[name] = `down (${(err as Error).message})`;
    }
  }
  output(args, { running: true, ...publicDevState(state), health }, () =>
    `dev stack pid ${state.pid}, up since ${state.startedAt}\n${table(state.components, health)}`,
  );
}

async function seed(args: DevArgs): Promise<void> {
  const config = resolveCliConfig(args);
  if (!readDevState() && !args.postgresUrl && !process.env.STRANGLER_POSTGRES_URL) {
    throw new StranglerError('no dev stack is running and no --postgres-url given; run: strangler dev up --detach', 'NOT_READY');
  }
  const { seedLegacy } = await import('../../examples/reference/monolith/index.ts');
  const started = Date.now();
  await seedLegacy(config.legacy.databaseUrl, { users: args.users, invoices: args.invoices, seed: args.seed });
  output(args, { users: args.users, invoices: args.invoices, seed: args.seed, ms: Date.now() - started }, () =>
    `seeded ${args.users} users and ${args.invoices} invoices (seed ${args.seed}) into ${config.legacy.databaseUrl} in ${Date.now() - started} ms`,
  );
}

function table(components: Record<string, string>, extra?: Record<string, string>): string {
  const width = Math.max(...Object.keys(components).map((k) => k.length));
  return Object.entries(components)
    .map(([k, v]) => `  ${k.padEnd(width)}  ${v}${extra?.[k] ? `  ${extra[k]}` : ''}`)
    .join('\n');
}

