import { createServer } from 'node:http';
import type { Argv, CommandModule } from 'yargs';
import { output, resolveCliConfig, type GlobalArgs, untilSignal } from '../context.ts';
import { createProgress, type Progress } from '../progress.ts';

interface SyncArgs extends GlobalArgs {
  action: 'start' | 'status' | 'verify' | 'stop' | 'resume' | 'cleanup';
  service?: string;
  metricsPort?: number;
  chunkRows: number;
  wait?: boolean;
  reverse?: boolean;
  recopy?: string[];
  fixSequences?: boolean;
}

/** `strangler sync start|status|verify|stop|cleanup <service>`: the forward sync of a service. */
export const syncCommand: CommandModule<GlobalArgs, SyncArgs> = {
  command: 'sync <action> [service]',
  describe: 'forward sync legacy → service database: start (backfill + stream, foreground) | status | verify | stop | resume (after a schema change) | cleanup',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .positional('action', { choices: ['start', 'status', 'verify', 'stop', 'resume', 'cleanup'] as const, demandOption: true })
      .positional('service', { type: 'string', describe: 'a service of strangler.yaml (status: all when omitted)' })
      .option('metrics-port', { type: 'number', describe: 'start: serve Prometheus metrics of the worker on this port' })
      .option('chunk-rows', { type: 'number', default: 5000, describe: 'verify: rows per checksum chunk' })
      .option('wait', { type: 'boolean', describe: 'start: wait for a running worker of the pipeline to stop instead of refusing' })
      .option('fix-sequences', { type: 'boolean', describe: 'start: give the service\'s key generators (sequences, identity columns) a range above the monolith\'s ids where they could collide' })
      .option('recopy', { type: 'string', array: true, describe: 'resume: copy these source tables again first (after a type change the service column could not take)' })
      .option('reverse', { type: 'boolean', describe: 'the reverse direction (service → legacy), which must run before a writing service takes writes' })
      .example('$0 sync start invoices', 'backfill, then stream until Ctrl-C')
      .example('$0 sync resume invoices', 'after a schema change stopped it: go on with the mapping strangler.yaml has now')
      .example('$0 sync verify invoices', 'row counts and checksums per key range at one point in time; exit 2 on a mismatch or when the pipeline lags too far to compare') as unknown as Argv<SyncArgs>,
  handler: async (args) => {
    const config = await resolveCliConfig(args);
    const { serviceByName } = await import('../../core/config/load.ts');
    const status = await import('../../migrations/sync/status.ts');
    const direction = args.reverse ? ('reverse' as const) : ('forward' as const);
    if (args.action === 'status') {
      const services = args.service ? [serviceByName(config, args.service)] : config.services.filter((s) => s.tables.length);
      const { takesWrites } = await import('../../cutover/executor.ts');
      const all = (
        await Promise.all(
          services.map(async (s) => [
            { ...(await status.syncStatus(config, s)), direction: 'forward' },
            ...(takesWrites(s) ? [{ ...(await status.syncStatus(config, s, 'reverse')), direction: 'reverse' }] : []),
          ]),
        )
      ).flat();
      output(args, all, () =>
        all
          .map((s) => {
            const lag = s.lagBytes === null ? 'n/a' : `${s.lagBytes} B, ${s.lagSeconds?.toFixed(1) ?? '?'} s`;
            const verify = s.lastVerification ? `${s.lastVerification.ok ? 'passed' : 'FAILED'} ${new Date(s.lastVerification.at).toISOString()}` : 'never';
            const stopped = s.stoppedReason ? `\n           STOPPED at a schema change since ${s.stoppedLsn}: ${s.stoppedReason}` : s.lastError ? `\n           last error: ${s.lastError}` : '';
            const ignored = s.schemaChanges.filter((c) => c.action !== 'stopped').map((c) => `${c.table}.${c.column} ${c.kind} (${c.detail}): ${c.action}`);
            return `${s.service.padEnd(10)} ${s.direction.padEnd(8)} ${s.state.padEnd(14)} ${s.active ? 'worker up  ' : 'no worker  '} lag ${lag.padEnd(18)} rows ${String(s.rowsApplied).padEnd(8)} verify ${verify}${stopped}${ignored.length ? `\n           schema changes: ${ignored.join('; ')}` : ''}${s.slotRetainWarning ? `\n           WARNING: ${s.slotRetainWarning}` : ''}`;
          })
          .join('\n'),
      );
      return;
    }
    if (!args.service) throw new (await import('../../core/errors.ts')).StranglerError(`sync ${args.action} needs a service: one of ${config.services.map((s) => s.name).join(', ')}`, 'BAD_INPUT');
    const service = serviceByName(config, args.service);
    switch (args.action) {
      case 'stop': {
        const asked = await status.requestStop(config, service, direction);
        output(args, { requested: asked }, () => (asked ? `asked the ${service.name} worker to stop (it checks every second)` : `no sync of ${service.name} has been started`));
        return;
      }
      case 'resume': {
        const r = await status.requestResume(config, service, direction, args.recopy ?? []);
        output(args, { resumed: r !== null, ...r }, () =>
          r
            ? `asked the ${service.name} worker to go on from ${r.lsn} with the mapping in strangler.yaml (it had stopped: ${r.reason}); strangler sync status ${service.name} says whether it did`
            : `the ${direction} sync of ${service.name} is not stopped at a schema change; nothing to resume`,
        );
        return;
      }
      case 'cleanup': {
        const r = await status.cleanupPipeline(config, service, direction);
        output(args, r, () => `dropped on the legacy database: slot ${r.slot ? 'yes' : '(none)'}, publication ${r.publication ? 'yes' : '(none)'}`);
        return;
      }
      case 'verify': {
        const { verifyService, recordVerification } = await import('../../migrations/sync/verify.ts');
        const { pipelineEnds } = await import('../../migrations/sync/setup.ts');
        // Waiting for the worker to reach the verify's point (MB of WAL applied of those it was behind), then chunks compared per table.
        let behindAtStart: number | null = null;
        const catchingUp = createProgress({ label: `verify ${service.name}: worker catching up`, unit: 'MB', format: (n) => (n / 1024 / 1024).toFixed(1) });
        let comparing = null as Progress | null;
        let table = '';
        const v = await verifyService(config, service, direction, {
          chunkRows: args.chunkRows,
          onQueued: () => process.stderr.write(`verify ${service.name}: another verify of this pipeline runs; waiting for it to finish\n`),
          onWait: (w) => {
            behindAtStart ??= w.behindBytes;
            catchingUp.update({ done: Math.max(0, behindAtStart - w.behindBytes), total: behindAtStart, detail: `${(w.behindBytes / 1024 / 1024).toFixed(1)} MB to go` });
          },
          onProgress: (p) => {
            const next = p.table !== table;
            if (next) {
              catchingUp.finish();
              comparing?.finish();
              comparing = createProgress({ label: `verify ${p.table.padEnd(16)}`, unit: 'chunks' });
              table = p.table;
            }
            comparing!.update({ done: p.chunksDone, total: p.chunksTotal, detail: `table ${p.tablesDone + 1}/${p.tablesTotal}` }, next || p.chunksDone === p.chunksTotal);
          },
        });
        catchingUp.finish();
        comparing?.finish();
        await recordVerification(pipelineEnds(config, service, direction).targetUrl, v).catch(() => undefined);
        const [from, to] = direction === 'forward' ? ['legacy', 'service'] : ['service', 'legacy'];
        const range = (r: { from: unknown[] | null; to: unknown[] | null }) => `(${r.from?.join(',') ?? '-∞'}, ${r.to?.join(',') ?? '+∞'}]`;
        output(args, v, () =>
          [
            ...v.tables.map((t) =>
              [
                `${t.ok ? 'ok  ' : 'DIFF'}  ${t.table} → ${t.target}: ${t.sourceRows} rows ${from}, ${t.targetRows} ${to}, ${t.chunks} chunks`,
                ...t.mismatches.map((m) => `        differs in key range ${range(m)}: ${m.sourceRows} rows ${from}, ${m.targetRows} ${to}`),
                ...(t.mismatchCount > t.mismatches.length ? [`        … ${t.mismatchCount - t.mismatches.length} more differing ranges (${t.mismatchCount} in all)`] : []),
                ...(t.unsettled.length ? [`        ${t.unsettled.length} key range(s) changed on the source during the read with no worker running: unsettled, not different`] : []),
                ...(t.columnsOnlyOnSource.length ? [`        only on ${from} (not compared): ${t.columnsOnlyOnSource.join(', ')}`] : []),
                ...(t.columnsOnlyOnTarget.length ? [`        only on ${to}, no longer filled by the sync (its source column is gone): ${t.columnsOnlyOnTarget.join(', ')}`] : []),
              ].join('\n'),
            ),
            v.note ? `note: ${v.note}` : null,
            `${{ verified: 'verified', mismatch: 'MISMATCH', lagging: 'LAGGING (not verified)' }[v.verdict]} ${v.consistent ? `at ${v.point} (source snapshot, worker held there)` : `without a worker (source as it was read)`} in ${v.ms} ms`,
          ]
            .filter(Boolean)
            .join('\n'),
        );
        if (!v.ok) process.exitCode = 2;
        return;
      }
      case 'start': {
        const { SyncWorker } = await import('../../migrations/sync/worker.ts');
        const { createLogger } = await import('../../core/logger.ts');
        const logger = createLogger('sync', config.logLevel);
        let progress = null as Progress | null;
        let lastTable = '';
        let lastDone = 0;
        const worker = new SyncWorker({
          config,
          service,
          logger,
          waitForLock: args.wait,
          fixSequences: args.fixSequences,
          direction,
          onProgress: (p) => {
            // One line per table on a terminal; without one, a plain line every 5 s and as each table starts and ends.
            if (p.table !== lastTable) progress?.finish();
            if (p.table !== lastTable) progress = createProgress({ label: `backfill ${p.table.padEnd(16)}`, unit: 'rows' });
            const milestone = p.table !== lastTable || p.tablesDone !== lastDone;
            progress!.update({ done: p.rows, total: p.estimate, detail: `table ${Math.min(p.tablesDone + 1, p.tablesTotal)}/${p.tablesTotal}` }, milestone);
            lastTable = p.table;
            lastDone = p.tablesDone;
          },
        });
        await worker.start();
        progress?.finish();
        // Copies of another service's tables also need a feed from that service's database,
        // which takes over from legacy at that service's switch.
        const { startFeeds } = await import('../../migrations/sync/feeds.ts');
        const feeds = direction === 'forward' ? startFeeds(config, service, logger) : null;
        let metrics: ReturnType<typeof createServer> | null = null;
        if (args.metricsPort) {
          metrics = createServer(async (_req, res) => void res.writeHead(200, { 'content-type': worker.metrics.contentType }).end(await worker.metrics.metrics())).listen(args.metricsPort, '127.0.0.1');
        }
        process.stderr.write(`sync ${service.name} (${direction}): streaming from slot ${worker.plan!.slot} at ${worker.appliedLsn}; Ctrl-C stops (strangler sync status ${service.name} shows the lag)\n`);
        await Promise.race([
          untilSignal(),
          // Not unref'd: this timer keeps the process alive while the worker streams.
          new Promise<void>((resolve) => setInterval(() => worker.state === 'stopped' && resolve(), 500)),
        ]);
        await feeds?.stop();
        await worker.stop();
        metrics?.close();
        process.stderr.write(`sync ${service.name}: stopped at ${worker.appliedLsn}\n`);
        process.exit(0);
      }
    }
  },
};
