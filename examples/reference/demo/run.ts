/**
 * `npm run demo`: the main job of the toolkit, on this machine. Starts the private stack
 * (Postgres with logical WAL, Redis), the legacy monolith, seeds it, and walks through it.
 * `--keep` leaves the stack up for the engineer to try the CLI against.
 */
import { loadConfig } from '../../../core/config/load.ts';
import { createLogger } from '../../../core/logger.ts';
import { startTopology, type Topology } from '../../../cli/dev/topology.ts';
import { runScenario } from './scenario.ts';

const keep = process.argv.includes('--keep');
const configFile = process.argv.find((a) => a.startsWith('--config='))?.slice('--config='.length) ?? 'strangler.yaml';
const started = Date.now();
const say = (line: string) => process.stdout.write(`${line}\n`);

let topology: Topology | undefined;
let stopping = false;
async function shutdown(code: number): Promise<never> {
  if (!stopping) {
    stopping = true;
    say('\nstopping everything');
    await topology?.stop().catch((err) => say(`stop failed: ${(err as Error).message}`));
    say(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
  process.exit(code);
}
process.once('SIGINT', () => void shutdown(130));
process.once('SIGTERM', () => void shutdown(143));

try {
  const fileConfig = loadConfig(configFile);
  say('strangler demo: the reference monolith on a private PostgreSQL (wal_level=logical) and Redis\n');
  topology = await startTopology((o) => loadConfig(configFile, o), {
    logger: createLogger('demo', 'warn'),
    seed: { users: 200, invoices: 2000, seed: 7 },
    redisUrl: undefined,
    onStep: (line) => say(`  ${line}`),
    // Invoices runs as two instances found through the registry (strangler.yaml: discovery: registry).
    extraInstances: { invoices: 1 },
  });
  void fileConfig;
  const ok = await runScenario(topology, say);
  if (keep) {
    say('\n--keep: the stack stays up; press Ctrl-C to stop it');
    await new Promise(() => undefined);
  }
  await shutdown(ok ? 0 : 1);
} catch (err) {
  say(`\ndemo failed: ${(err as Error).stack ?? err}`);
  await shutdown(1);
}
