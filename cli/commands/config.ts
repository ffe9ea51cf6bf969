import { writeFileSync } from 'node:fs';
import type { CommandModule } from 'yargs';
import { output, resolveCliConfig, type GlobalArgs } from '../context.ts';

/** `strangler config check|schema`: validate strangler.yaml; publish its JSON Schema. */
export const configCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'config <action>',
  describe: 'check strangler.yaml, or print its JSON Schema (for editors)',
  builder: (y) =>
    y
      .positional('action', { choices: ['check', 'schema'] as const, demandOption: true })
      .option('out', { type: 'string', describe: 'schema: write to this file instead of stdout' }) as never,
  handler: async (args) => {
    const a = args as unknown as GlobalArgs & { action: 'check' | 'schema'; out?: string };
    if (a.action === 'schema') {
      const { configJsonSchema } = await import('../../core/config/load.ts');
      const text = `${JSON.stringify(configJsonSchema(), null, 2)}\n`;
      if (a.out) writeFileSync(a.out, text);
      else process.stdout.write(text);
      return;
    }
    const config = await resolveCliConfig(a);
    output(a, { ok: true, file: config.file, services: config.services.map((s) => s.name) }, () =>
      `${config.file}: valid; ${config.services.length} services in order: ${config.services.map((s) => `${s.name} (${s.prefix})`).join(', ')}`,
    );
  },
};
