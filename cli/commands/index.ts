import type { CommandModule } from 'yargs';
import { configCommand } from './config.ts';
import { devCommand } from './dev.ts';
import { doctorCommand } from './doctor.ts';
import { gatewayCommand } from './gateway.ts';
import { syncCommand } from './sync.ts';

/** Every `strangler` command, one module each. Add new commands here. */
export const commands = [configCommand, devCommand, doctorCommand, gatewayCommand, syncCommand] as unknown as CommandModule[];
