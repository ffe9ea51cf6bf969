import yargs from 'yargs';
import type { CommandModule } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { exitCodeFor, StranglerError } from '../core/errors.ts';
import { lastResolvedConfig } from './context.ts';

/**
 * Runs a command line made of command modules: the global options every command shares, and
 * errors turned into one line and an exit code: 2 refused (checks, bad input, a dependency a
 * refusal needs), 3 applied but not confirmed by every gateway (set by the command), 1 anything
 * else. Expected infrastructure faults are said in one line, without a stack trace (--verbose
 * shows it). The `strangler` command is one; an example's own entry point
 * (examples/reference/cli.ts) another.
 */
export async function runCli(name: string, usage: string, commands: CommandModule[]): Promise<never> {
  const cli = yargs(hideBin(process.argv))
    .scriptName(name)
    .usage(`$0 <command> [options]\n\n${usage}`)
    .option('config', { alias: 'c', type: 'string', default: process.env.STRANGLER_CONFIG ?? 'strangler.yaml', describe: 'path of strangler.yaml', global: true })
    .option('json', { type: 'boolean', describe: 'print machine-readable JSON', global: true })
    .option('postgres-url', { type: 'string', describe: 'PostgreSQL cluster URL (overrides postgres.url; env STRANGLER_POSTGRES_URL)', global: true })
    .option('redis-url', { type: 'string', describe: 'Redis URL (overrides redis.url; env REDIS_URL)', global: true })
    .option('verbose', { type: 'boolean', describe: 'print the stack trace of an error', global: true })
    .command(commands)
    .demandCommand(1, `name a command; see ${name} --help`)
    .strict()
    .recommendCommands()
    .help()
    .wrap(Math.min(110, process.stdout.columns || 110))
    .fail((msg, err, y) => {
      if (err) throw err;
      void y;
      process.stderr.write(`error: ${msg}\nrun: ${name} --help\n`);
      process.exit(2);
    });

  try {
    await cli.parseAsync();
    // A command that finished has nothing left to do: do not let a stray handle keep the CLI alive.
    process.exit(process.exitCode ?? 0);
  } catch (caught) {
    // Loaded only on an error: it brings pg, which `--help` does not need.
    const { explainDependencyFault } = await import('../core/dependency-faults.ts');
    const explained = explainDependencyFault(caught, lastResolvedConfig());
    const err = explained ?? caught;
    const code = err instanceof StranglerError ? err.code : 'INTERNAL';
    process.stderr.write(`error [${code}]: ${(err as Error).message}\n`);
    // An unexpected error shows where it came from; an expected one only when asked.
    const stack = (caught as Error)?.stack;
    if (stack && (process.argv.includes('--verbose') || !(err instanceof StranglerError))) process.stderr.write(`${stack}\n`);
    process.exit(exitCodeFor(err));
  }
}
