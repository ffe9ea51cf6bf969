import type { CommandModule } from 'yargs';
import { configCommand } from './config.ts';
import { devCommand } from './dev.ts';

/** Every `strangler` command, one module each. Add new commands here. */
export const commands = [configCommand, devCommand] as unknown as CommandModule[];
