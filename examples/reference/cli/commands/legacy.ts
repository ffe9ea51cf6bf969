import type { Argv, CommandModule } from 'yargs';
import { resolveCliConfig, secretFileOptions, type GlobalArgs, untilSignal } from '../../../../cli/context.ts';

/** `reference legacy`: the reference monolith on legacy.port (migrates its database first). */
export const legacyCommand: CommandModule<GlobalArgs, GlobalArgs & { port?: number; host: string }> = {
  command: 'legacy',
  describe: 'run the reference monolith (migrates the legacy database first)',
  builder: (y: Argv<GlobalArgs>) =>
    secretFileOptions(y)
      .option('port', { type: 'number', describe: 'default: legacy.port' })
      .option('host', { type: 'string', default: process.env.STRANGLER_HOST ?? '127.0.0.1', describe: 'address to listen on (0.0.0.0 in a container)' }) as unknown as Argv<GlobalArgs & { port?: number; host: string }>,
  handler: async (args) => {
    const config = await resolveCliConfig(args);
    const { legacySecret, migrateLegacy, startLegacyApp } = await import('../../monolith/index.ts');
    legacySecret(config); // before migrating its database
    await migrateLegacy(config.legacy.databaseUrl);
    const running = await startLegacyApp(config, { port: args.port, host: args.host });
    process.stderr.write(`legacy monolith listening on ${running.url}\n`);
    await untilSignal();
    await running.close();
    process.exit(0);
  },
};
