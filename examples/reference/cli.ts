import { runCli } from '../../cli/run.ts';
import { referenceCommands } from './cli/commands/index.ts';

/**
 * The reference example's own command line (`npm run reference -- <command>`, or
 * `node examples/reference/bin.js`): its monolith, its services, OCR workers, the auth
 * service's keys and seed data. strangler.yaml's dev.processes runs these at `strangler dev up`;
 * the toolkit's `strangler` command knows nothing of them.
 */
await runCli('reference', 'The reference invoice monolith and its extracted services (an example the toolkit is used on).', referenceCommands);
