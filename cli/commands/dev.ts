import type { CommandModule } from 'yargs';
import type { GlobalArgs } from '../context.ts';

/** `strangler dev up|down|status|seed` (filled in by the foundation work). */
export const devCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'dev <action>',
  describe: 'run the local stack: up | down | status | seed',
  builder: (y) => y.positional('action', { choices: ['up', 'down', 'status', 'seed'] as const, demandOption: true }) as never,
  handler: () => {
    throw new Error('not yet');
  },
};
