import cluster from 'node:cluster';
import type { Argv, CommandModule } from 'yargs';
import { StranglerError } from '../../core/errors.ts';
import { checkPortFlag, resolveCliConfig, secretFileOptions, type GlobalArgs, untilSignal } from '../context.ts';

interface GatewayArgs extends GlobalArgs {
  port?: number;
  workers: number;
  zone?: string;
}

/**
 * `strangler gateway [--workers N]`: the data plane on gateway.port. With N > 1, node:cluster
 * runs N processes sharing the port; the primary replaces a worker that dies and stops them all
 * gracefully on SIGINT/SIGTERM.
 */
export const gatewayCommand: CommandModule<GlobalArgs, GatewayArgs> = {
  command: 'gateway',
  describe: 'run the gateway (the data plane on gateway.port)',
  builder: (y: Argv<GlobalArgs>) =>
    secretFileOptions(y)
      .option('port', { type: 'number', describe: 'listen port (default: gateway.port)' })
      .option('workers', { type: 'number', default: 1, describe: 'processes sharing the port (node:cluster)' })
      .option('zone', { type: 'string', describe: "this gateway's zone, for zone-aware routing (overrides gateway.zone; env STRANGLER_ZONE)" })
      .example('$0 gateway --workers 2', 'two gateway processes on port 5000') as unknown as Argv<GatewayArgs>,
  handler: async (args) => {
    if (!Number.isInteger(args.workers) || args.workers < 1 || args.workers > 64) {
      throw new StranglerError(`--workers must be an integer from 1 to 64, got ${args.workers}`, 'BAD_INPUT');
    }
    checkPortFlag(args.port);
    if (args.zone !== undefined && args.zone.trim() === '') throw new StranglerError('--zone must not be empty; leave it out for no zone preference', 'BAD_INPUT');
    const config = await resolveCliConfig(args, process.env, { gatewayZone: args.zone });
    const { createLogger } = await import('../../core/logger.ts');
    const logger = createLogger('gateway', config.logLevel);
    // Before forking: workers refused one by one would be restarted forever.
    (await import('../../gateway/server.ts')).gatewaySecrets(config);
    if (args.workers > 1 && cluster.isPrimary) {
      let stopping = false;
      for (let i = 0; i < args.workers; i++) cluster.fork();
      cluster.on('exit', (worker, code, signal) => {
        if (stopping) return;
        logger.error({ pid: worker.process.pid, code, signal }, 'gateway worker died; starting a new one');
        cluster.fork();
      });
      const stop = () => {
        stopping = true;
        for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      await new Promise<void>((resolve) => cluster.on('exit', () => Object.keys(cluster.workers ?? {}).length === 0 && resolve()));
      return;
    }
    const { startGateway } = await import('../../gateway/start.ts');
    const gw = await startGateway(config, { port: args.port, logger, exclusive: args.workers === 1 });
    process.stderr.write(`gateway ${gw.instanceId} listening on ${gw.url} (route table v${gw.routes.loaded ? gw.routes.current().version : '?'}${gw.routes.degraded ? ', degraded' : ''})\n`);
    await untilSignal();
    await gw.stop();
    process.exit(0);
  },
};
