import type { CommandModule } from 'yargs';
import { configCommand } from './config.ts';
import { devCommand } from './dev.ts';
import { gatewayCommand } from './gateway.ts';

/** Every `strangler` command, one module each. Add new commands here. */
export const commands = [configCommand, devCommand, gatewayCommand] as unknown as CommandModule[];
