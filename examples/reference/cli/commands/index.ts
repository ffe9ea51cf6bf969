import type { CommandModule } from 'yargs';
import { authCommand } from './auth.ts';
import { legacyCommand } from './legacy.ts';
import { ocrCommand } from './ocr.ts';
import { seedCommand } from './seed.ts';
import { serviceCommand } from './service.ts';

/** Every command of the reference example's command line, one module each. */
export const referenceCommands = [legacyCommand, serviceCommand, ocrCommand, authCommand, seedCommand] as unknown as CommandModule[];
