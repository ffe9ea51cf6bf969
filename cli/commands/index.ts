import type { CommandModule } from 'yargs';
import { authCommand } from '../../examples/reference/cli/commands/auth.ts';
import { composeCommand } from './compose.ts';
import { configCommand } from './config.ts';
import { devCommand } from './dev.ts';
import { cutoverCommand, finalizeCommand, promoteCommand, rollbackCommand } from './cutover.ts';
import { doctorCommand } from './doctor.ts';
import { gatewayCommand } from './gateway.ts';
import { initCommand } from './init.ts';
import { legacyCommand } from '../../examples/reference/cli/commands/legacy.ts';
import { ocrCommand } from '../../examples/reference/cli/commands/ocr.ts';
import { controlCommand, diffCommand, historyCommand, planCommand, statusCommand } from './status.ts';
import { serviceCommand } from '../../examples/reference/cli/commands/service.ts';
import { servicesCommand } from './services.ts';
import { syncCommand } from './sync.ts';

/** Every `strangler` command, one module each. Add new commands here. */
export const commands = [
  initCommand,
  configCommand,
  composeCommand,
  devCommand,
  controlCommand,
  doctorCommand,
  syncCommand,
  gatewayCommand,
  legacyCommand,
  serviceCommand,
  servicesCommand,
  authCommand,
  ocrCommand,
  statusCommand,
  planCommand,
  cutoverCommand,
  promoteCommand,
  rollbackCommand,
  finalizeCommand,
  historyCommand,
  diffCommand,
] as unknown as CommandModule[];
