/**
 * `npm run demo`: the main job of the toolkit, on this machine. Starts the private stack
 * (Postgres with logical WAL, Redis), seeds the reference monolith, starts it and its services
 * (strangler.yaml's dev.processes) and the gateway, and walks through a whole migration.
 * `--keep` leaves the stack up, registered like `strangler dev up`, to try the CLI against.
 */
import { loadConfig } from '../../../core/config/load.ts';
import { createLogger, silentLogger } from '../../../core/logger.ts';
import { readDevState } from '../../../cli/context.ts';
import { recordDevStack } from '../../../cli/dev/state.ts';
import { startTopology, type Topology } from '../../../cli/dev/topology.ts';
import { migrateLegacy, seedLegacy } from '../monolith/index.ts';
import { startService } from '../services/app.ts';
import { runScenario } from './scenario.ts';

const keep = process.argv.includes('--keep');
const configFile = process.argv.find((a) => a.startsWith('--config='))?.slice('--config='.length) ?? 'strangler.yaml';
const started = Date.now();
const say = (line: string) => process.stdout.write(`${line}\n`);

let topology: Topology | undefined;
let record: { remove(): void } | undefined;
let stopping = false;
async function shutdown(code: number): Promise<never> {
  if (!stopping) {
    stopping = true;
    say('\nstopping everything');
    await topology?.stop().catch((err) => say(`stop failed: ${(err as Error).message}`));
    record?.remove();
    say(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
  process.exit(code);
}
process.once('SIGINT', () => void shutdown(130));
process.once('SIGTERM', () => void shutdown(143));

try {
  if (keep && readDevState()) throw new Error('a dev stack is already running in this folder; stop it first: strangler dev down');
  say('strangler demo: the reference monolith on a private PostgreSQL (wal_level=logical) and Redis\n');
  // The monolith and its services run as strangler.yaml's dev.processes, as under `strangler dev up`.
  topology = await startTopology((o) => loadConfig(configFile, o), {
    logger: createLogger('demo', 'warn'),
    onStep: (line) => say(`  ${line}`),
    // More data than dev.setup's seed, made here instead of it.
    setup: [],
    beforeProcesses: async (config) => {
      const t = Date.now();
      await migrateLegacy(config.legacy.databaseUrl);
      await seedLegacy(config.legacy.databaseUrl, { users: 200, invoices: 2000, seed: 7 });
      say(`  seeded    200 users, 2000 invoices in ${Date.now() - t} ms`);
    },
  });
  // Invoices runs as two instances found through the registry (strangler.yaml: discovery: registry):
  // the second one in this process, for the rolling restart (demo/migration.ts).
  const second = await startService(topology.config, 'invoices', { port: 0, logger: silentLogger });
  topology.components.push({ name: 'invoices#2', url: second.url, close: second.close });
  say(`  invoices#2 ${second.url}`);
  const ok = await runScenario(topology, say);
  if (keep) {
    // Registered like `strangler dev up`: strangler commands in this folder use this stack, `dev down` stops it.
    record = recordDevStack(topology);
    say('\n--keep: the stack stays up; strangler commands in this folder use it; stop it with Ctrl-C or: strangler dev down');
    await new Promise(() => undefined);
  }
  await shutdown(ok ? 0 : 1);
} catch (err) {
  say(`\ndemo failed: ${(err as Error).stack ?? err}`);
  await shutdown(1);
}
