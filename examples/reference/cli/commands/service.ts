import type { Argv, CommandModule } from 'yargs';
import { StranglerError } from '../../../../core/errors.ts';
import { checkPortFlag, resolveCliConfig, secretFileOptions, type GlobalArgs, untilSignal } from '../../../../cli/context.ts';

interface ServiceArgs extends GlobalArgs {
  name: string;
  port?: number;
  host: string;
  tokens: string;
  advertiseUrl?: string;
  zone?: string;
  instanceVersion?: string;
}

/** `reference service <name>`: run one extracted service on its port. */
export const serviceCommand: CommandModule<GlobalArgs, ServiceArgs> = {
  command: 'service <name>',
  describe: 'run an extracted service (migrates its database first)',
  builder: (y: Argv<GlobalArgs>) =>
    secretFileOptions(y)
      .positional('name', { type: 'string', demandOption: true })
      .option('port', { type: 'number', describe: 'default: the service port of strangler.yaml' })
      .option('host', { type: 'string', default: process.env.STRANGLER_HOST ?? '127.0.0.1', describe: 'address to listen on (0.0.0.0 in a container; the registry then gets this machine\'s name)' })
      .option('tokens', { type: 'string', default: process.env.STRANGLER_AUTH_TOKENS ?? 'legacy', describe: 'auth: legacy (HS256 the monolith accepts) | rs256 (own keys, JWKS)' })
      .option('advertise-url', { type: 'string', describe: 'the URL gateways reach this instance at (registry); default: where it listens' })
      .option('zone', { type: 'string', default: process.env.STRANGLER_ZONE ?? 'local', describe: 'zone recorded in the registry' })
      .option('instance-version', { type: 'string', default: process.env.STRANGLER_SERVICE_VERSION, describe: 'version recorded in the registry (default: the toolkit version)' }) as unknown as Argv<ServiceArgs>,
  handler: async (args) => {
    checkPortFlag(args.port);
    if (args.tokens !== 'legacy' && args.tokens !== 'rs256') throw new StranglerError(`--tokens must be legacy or rs256, got ${args.tokens}`, 'BAD_INPUT');
    const config = await resolveCliConfig(args);
    const { startService } = await import('../../services/app.ts');
    const running = await startService(config, args.name, {
      port: args.port,
      host: args.host,
      tokenFormat: args.tokens,
      instance: { advertiseUrl: args.advertiseUrl, zone: args.zone, version: args.instanceVersion },
    });
    process.stderr.write(`${args.name} listening on ${running.url}${running.registration ? ` (registered as ${running.registration.instance.id})` : ''}\n`);
    await untilSignal();
    // Graceful: leave the registry, drain, let in-flight requests finish, then exit.
    await running.close();
    process.exit(0);
  },
};
