import type { Argv, CommandModule } from 'yargs';
import { StranglerError } from '../../core/errors.ts';
import { checkPortFlag, resolveCliConfig, secretFileOptions, untilSignal, type GlobalArgs } from '../context.ts';
import { parseDuration } from './cutover.ts';

interface UiArgs extends GlobalArgs {
  port: number;
  host: string;
  refresh: string;
  actor?: string;
}

/**
 * `strangler ui`: the migration as a live web page (ui/). Everything it needs is imported when
 * it runs, so that `strangler --help` does not load it.
 */
export const uiCommand: CommandModule<GlobalArgs, UiArgs> = {
  command: 'ui',
  describe: 'a live dashboard of the migration in the browser: routes, gateway acks, sync lag, shadow diffs, canary analysis, instances, audit; promote and rollback with the admin token',
  builder: (y: Argv<GlobalArgs>) =>
    secretFileOptions(y)
      .option('port', { type: 'number', default: 5090, describe: 'listen port (0: any free port)' })
      .option('host', { type: 'string', default: '127.0.0.1', describe: 'listen address; anyone who can reach it can read the state (actions need the admin token)' })
      .option('refresh', { type: 'string', default: '2s', describe: 'how often the state is read and pushed to the page' })
      .option('actor', { type: 'string', describe: 'who the actions are recorded as (default: STRANGLER_ACTOR, else the OS user), with "(strangler ui)"' })
      .example('$0 ui --admin-token-file ./admin-token', 'open http://127.0.0.1:5090/') as unknown as Argv<UiArgs>,
  handler: async (args) => {
    checkPortFlag(args.port);
    if (!args.host.trim()) throw new StranglerError('--host must not be empty; the default is 127.0.0.1', 'BAD_INPUT');
    const refreshMs = parseDuration(args.refresh);
    if (refreshMs < 200) throw new StranglerError(`--refresh must be at least 200ms, got ${args.refresh}`, 'BAD_INPUT');
    const config = await resolveCliConfig(args);
    const { openCutover, resolveActor } = await import('../../cutover/executor.ts');
    const { createDashboard } = await import('../../ui/dashboard.ts');
    const { LagHistory } = await import('../../ui/lag-history.ts');
    const { startUiServer } = await import('../../ui/server.ts');
    const opened = await openCutover(config, `${resolveActor(args.actor)} (strangler ui)`);
    const { cutover, redis } = opened;
    const adminToken = config.gateway.adminToken;
    const dashboard = createDashboard({
      config,
      cutover,
      redis,
      keys: cutover.probe(0).keys,
      lag: new LagHistory(),
      actions: !!adminToken,
      refreshMs,
      onError: (err) => process.stderr.write(`ui: ${err.message.split('\n')[0]}\n`),
    });
    await dashboard.start();
    const ui = await startUiServer({ dashboard, cutover, adminToken, host: args.host, port: args.port }).catch(async (err: NodeJS.ErrnoException) => {
      await dashboard.stop();
      await opened.close();
      if (err.code === 'EADDRINUSE') throw new StranglerError(`port ${args.port} on ${args.host} is taken; pass another: strangler ui --port N`, 'BAD_INPUT');
      throw err;
    });
    process.stderr.write(`strangler ui on ${ui.url}/ (refresh ${refreshMs} ms; actions ${adminToken ? 'need the admin token' : 'off: no gateway.adminToken configured'})\n`);
    if (!/^(127\.|localhost$|::1$)/.test(args.host)) process.stderr.write(`warning: listening on ${args.host}: anyone who can reach it can read the migration's state (instances, shadow samples)\n`);
    await untilSignal();
    await ui.close();
    await dashboard.stop();
    await opened.close();
  },
};
