import type { CommandModule } from 'yargs';
import { composeCommand } from './compose.ts';
import { configCommand } from './config.ts';
import { devCommand } from './dev.ts';
import { cutoverCommand, finalizeCommand, promoteCommand, rollbackCommand } from './cutover.ts';
import { doctorCommand } from './doctor.ts';
import { gatewayCommand } from './gateway.ts';
import { haproxyCommand } from './haproxy.ts';
import { initCommand } from './init.ts';
import { controlCommand, diffCommand, historyCommand, planCommand, statusCommand } from './status.ts';
import { servicesCommand } from './services.ts';
import { syncCommand } from './sync.ts';
import { uiCommand } from './ui.ts';

/**
 * Every `strangler` command, one module each. Add new commands here. A command module imports
 * only yargs types and light modules at its top; what its handler needs (the config loader,
 * the logger, drivers) it imports inside the handler, so `strangler --help` stays fast
 * (cli/cli.test.ts checks what `--help` loads).
 */
export const commands = [
  initCommand,
  configCommand,
  composeCommand,
  devCommand,
  controlCommand,
  doctorCommand,
  syncCommand,
  gatewayCommand,
  haproxyCommand,
  servicesCommand,
  statusCommand,
  planCommand,
  cutoverCommand,
  promoteCommand,
  rollbackCommand,
  finalizeCommand,
  historyCommand,
  diffCommand,
  uiCommand,
] as unknown as CommandModule[];
