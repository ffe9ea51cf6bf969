import { join } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { StranglerError } from '../../core/errors.ts';
import { checkPortFlag, resolveCliConfig, secretFileOptions, type GlobalArgs, untilSignal } from '../context.ts';

interface HaproxyArgs extends GlobalArgs {
  port?: number;
  renderOnly: boolean;
  out?: string;
  runDir?: string;
}

/**
 * `strangler haproxy`: the HAProxy data plane (gateway.engine: haproxy). Renders haproxy.cfg from
 * strangler.yaml, runs HAProxy, and runs the agent that applies each route version through the
 * Runtime API and acknowledges it like any gateway. `--render-only` prints the configuration
 * (with `--out DIR`, writes every file it needs) for an HAProxy you run yourself.
 */
export const haproxyCommand: CommandModule<GlobalArgs, HaproxyArgs> = {
  command: 'haproxy',
  describe: 'run the HAProxy data plane (HAProxy plus the agent that follows the control plane)',
  builder: (y: Argv<GlobalArgs>) =>
    secretFileOptions(y)
      .option('port', { type: 'number', describe: 'listen port (default: gateway.port)' })
      .option('render-only', { type: 'boolean', default: false, describe: 'print haproxy.cfg and exit (no HAProxy, no agent)' })
      .option('out', { type: 'string', describe: 'with --render-only: write haproxy.cfg, strangler.lua, routes.map and key files into this directory' })
      .option('run-dir', { type: 'string', describe: 'where the files and the Runtime API socket live (default: gateway.haproxy.runDir)' })
      .example('$0 haproxy', 'HAProxy on gateway.port, following the control plane')
      .example('$0 haproxy --render-only --out /etc/haproxy/strangler', 'the files for an HAProxy you run yourself') as unknown as Argv<HaproxyArgs>,
  handler: async (args) => {
    checkPortFlag(args.port);
    if (args.out && !args.renderOnly) throw new StranglerError('--out goes with --render-only (strangler haproxy writes its files into --run-dir itself)', 'BAD_INPUT');
    const config = await resolveCliConfig(args, process.env);
    const { createLogger } = await import('../../core/logger.ts');
    const logger = createLogger('haproxy', config.logLevel);
    const { fetchJwksKeys, renderFor, startHaproxyEngine } = await import('../../gateway/haproxy/agent.ts');
    if (args.renderOnly) {
      const { gatewaySecrets } = await import('../../gateway/server.ts');
      const { issuersOf } = await import('../../gateway/issuers.ts');
      const runDir = args.out ?? args.runDir ?? config.gateway.haproxy.runDir;
      const jwks = await fetchJwksKeys(issuersOf(config, gatewaySecrets(config).jwtSecret), config.gateway.jwksTimeoutMs, logger);
      const rendered = renderFor(config, { runDir, port: args.port ?? config.gateway.port }, jwks);
      if (args.out) {
        const { writeRendered } = await import('../../gateway/haproxy/process.ts');
        writeRendered(args.out, rendered);
        process.stderr.write(`wrote ${Object.keys(rendered.files).map((f) => join(args.out!, f)).join(', ')}\n(routes.map is empty: the route table reaches HAProxy through its Runtime API, from strangler haproxy's agent)\n`);
      } else process.stdout.write(rendered.files['haproxy.cfg']);
      return;
    }
    const engine = await startHaproxyEngine(config, { port: args.port, logger, runDir: args.runDir });
    process.stderr.write(`haproxy ${engine.instanceId} (pid ${engine.haproxy.pid}) listening on ${engine.url} (route table v${engine.routes.loaded ? engine.routes.current().version : '?'}${engine.routes.degraded ? ', degraded' : ''}); Runtime API ${engine.rendered.socket}\n`);
    const why = await Promise.race([untilSignal().then(() => 'signal' as const), engine.haproxy.exited.then(() => 'exited' as const)]);
    await engine.stop();
    if (why === 'exited') throw new StranglerError('HAProxy exited; see its output above', 'INTERNAL');
    process.exit(0);
  },
};
