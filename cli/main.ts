import { commands } from './commands/index.ts';
import { runCli } from './run.ts';

/** The `strangler` command. Each command is one module in cli/commands/ (cli/run.ts wires them). */
await runCli('strangler', 'Move a monolith to services one route prefix at a time.', commands);
