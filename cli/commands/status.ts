import type { Argv, CommandModule } from 'yargs';
import { scopeLabel } from '../../cutover/state-machine.ts';
import { output, resolveCliConfig, type GlobalArgs } from '../context.ts';

interface StatusArgs extends GlobalArgs {
  prefix?: string;
  limit: number;
  window: number;
}

async function open(args: GlobalArgs) {
  const config = await resolveCliConfig(args);
  const { openCutover, resolveActor } = await import('../../cutover/executor.ts');
  const opened = await openCutover(config, resolveActor(undefined));
  return { config, ...opened };
}

const duration = (ms: number) => (ms >= 60_000 ? `${Math.floor(ms / 60_000)}m${String(Math.floor((ms % 60_000) / 1000)).padStart(2, '0')}s` : `${Math.ceil(ms / 1000)}s`);
const pct = (v: number | null) => (v === null ? '-' : `${v.toFixed(2)}%`);
const fmtLag = (b: number | null, s: number | null) => (b === null ? '-' : `${b < 1024 ? `${b} B` : `${(b / 1024).toFixed(0)} kB`}/${s === null ? '?' : s.toFixed(1)}s`);

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n');
}

/** `strangler status`: a table per prefix: phase, mode, weight, gateways, sync, shadow, canary. */
export const statusCommand: CommandModule<GlobalArgs, StatusArgs> = {
  command: 'status',
  describe: 'routes, phases, weights, gateway acks, instances up, sync lag, last verify, shadow mismatch, canary figures',
  builder: (y: Argv<GlobalArgs>) => y.option('window', { type: 'number', default: 60, describe: 'seconds of canary figures' }) as unknown as Argv<StatusArgs>,
  handler: async (args) => {
    const { config, cutover, redis, keys, close } = await open(args).then((o) => ({ ...o, keys: o.cutover.probe(0).keys }));
    try {
      const { overview } = await import('../../cutover/overview.ts');
      const rows = await overview(cutover, redis, keys, config, args.window * 1000);
      output(args, rows, () =>
        table([
          ['PREFIX', 'SERVICE', 'PHASE', 'BAKE', 'MODE', 'WEIGHT', 'GATEWAYS', 'INSTANCES', 'SYNC', 'LAG', 'REVERSE', 'CONFLICTS', 'LAST VERIFY', 'SHADOW DIFF', `CANARY ERR/P99 (${args.window}s) svc vs legacy`],
          ...rows.map((r) => [
            r.prefix,
            r.service,
            r.phase,
            // The bake after a switch: time left and failed analyses in a row, or that it stopped unfinished.
            r.bake ? (r.bake.state === 'baking' ? `${duration(r.bake.remainingMs)} left${r.bake.failures ? `, ${r.bake.failures}/${r.bake.threshold} failed` : ''}` : 'interrupted') : '-',
            r.mode,
            r.mode === 'canary' ? `${r.weight}%${scopeLabel(r.methods)}` : r.mode === 'service' ? '100%' : '-',
            `${r.gateways.acknowledged}/${r.gateways.live} @v${r.gateways.version}`,
            r.instances ? `${r.instances.available}/${r.instances.total} up` : '-',
            r.sync.state,
            fmtLag(r.sync.lagBytes, r.sync.lagSeconds),
            r.reverse ? `${r.reverse.state}${r.reverse.lagBytes !== null ? ` ${r.reverse.lagBytes} B` : ''}` : 'n/a (read-only)',
            r.reverse ? String(r.reverse.conflicts) : '-',
            r.sync.lastVerify ?? 'never',
            r.shadow.compared ? `${pct(r.shadow.mismatchPercent)} of ${r.shadow.compared}` : '-',
            r.canary.service.requests || r.canary.legacy.requests
              ? `${pct(r.canary.service.errorPercent)} ${r.canary.service.p99Ms ?? '-'}ms vs ${pct(r.canary.legacy.errorPercent)} ${r.canary.legacy.p99Ms ?? '-'}ms`
              : '-',
          ]),
        ]),
      );
    } finally {
      await close();
    }
  },
};

/** `strangler plan`: the migration order and what each prefix's next step would check. */
export const planCommand: CommandModule<GlobalArgs, StatusArgs> = {
  command: 'plan',
  describe: "the migration order from strangler.yaml and what the next step of each would check; --coupling: the foreign keys its boundaries cut, from the monolith's schema",
  builder: (y: Argv<GlobalArgs>) => y.option('coupling', { type: 'boolean', describe: "report the couplings of strangler.yaml's boundaries against the monolith's schema (reads only the legacy database)" }) as unknown as Argv<StatusArgs>,
  handler: async (args) => {
    if ((args as { coupling?: boolean }).coupling) return couplingReport(args);
    const { config, cutover, redis, close } = await open(args);
    try {
      const { overview } = await import('../../cutover/overview.ts');
      const rows = await overview(cutover, redis, cutover.probe(0).keys, config);
      output(args, rows.map((r) => ({ order: r.order, prefix: r.prefix, service: r.service, phase: r.phase, methods: r.methods, dependsOn: config.services.find((s) => s.name === r.service)!.dependsOn, next: r.next })), () =>
        rows
          .map((r) => {
            const deps = config.services.find((s) => s.name === r.service)!.dependsOn;
            const next = 'refused' in r.next ? `no next step: ${r.next.refused}` : `next: ${r.next.command} (strangler promote ${r.prefix}), checks: ${r.next.checks.join(', ') || 'none'}`;
            const phase = r.phase === 'canary' && r.mode === 'canary' ? `canary ${r.weight}%${scopeLabel(r.methods)}` : r.phase;
            return `${r.order}. ${r.prefix.padEnd(16)} ${r.service.padEnd(10)} ${phase.padEnd(11)}${deps.length ? ` after ${deps.join(', ')}` : ''}\n     ${next}`;
          })
          .join('\n'),
      );
    } finally {
      await close();
    }
  },
};

/** `strangler history [prefix]`: the audit log, newest first. */
export const historyCommand: CommandModule<GlobalArgs, StatusArgs> = {
  command: 'history [prefix]',
  describe: 'the audit log: every change and refusal, who, when, why, forced or not',
  builder: (y: Argv<GlobalArgs>) => y.positional('prefix', { type: 'string' }).option('limit', { type: 'number', default: 50 }) as unknown as Argv<StatusArgs>,
  handler: async (args) => {
    const { cutover, close } = await open(args);
    try {
      const rows = await cutover.store.history(args.prefix ? args.prefix.replace(/\/+$/, '').toLowerCase() : null, args.limit);
      output(args, rows, () =>
        rows.length === 0
          ? 'no changes recorded yet'
          : rows
              .map((r) => `${new Date(r.at).toISOString()}  ${r.actor}  ${r.command} ${r.prefix ?? ''}  ${r.from_phase ?? '?'} → ${r.to_phase ?? '-'}  ${r.outcome}${r.forced ? ' (FORCED)' : ''}${r.route_version ? ` v${r.route_version}` : ''}${r.reason ? `  "${r.reason}"` : ''}${r.outcome === 'refused' && r.details?.why ? `\n    why: ${r.details.why}` : ''}`)
              .join('\n'),
      );
    } finally {
      await close();
    }
  },
};

/** `strangler diff <prefix>`: the shadow mismatch samples the gateways kept. */
export const diffCommand: CommandModule<GlobalArgs, StatusArgs & { prefix: string }> = {
  command: 'diff <prefix>',
  describe: 'shadow results for a prefix: matched, noise, lagged and real mismatches, the noisy JSON paths learned, and mismatch samples (the request, both answers, the differences)',
  builder: (y: Argv<GlobalArgs>) => y.positional('prefix', { type: 'string', demandOption: true }).option('limit', { type: 'number', default: 10 }) as unknown as Argv<StatusArgs & { prefix: string }>,
  handler: async (args) => {
    const { config, redis, cutover, close } = await open(args);
    try {
      const { serviceForPrefix } = await import('../../core/config/load.ts');
      const service = serviceForPrefix(config, args.prefix);
      const { readShadowReport } = await import('../../cutover/shadow-report.ts');
      const { counts, noisyPaths, samples } = await readShadowReport(redis, cutover.probe(0).keys, service.name, args.limit);
      output(args, { counts, noisyPaths, samples }, () =>
        [
          `${service.prefix}: ${counts.match ?? 0} matched, ${counts.noise ?? 0} noise (differed only where legacy differed from itself), ${counts.lagged ?? 0} lagged (matched once the sync caught up), ${counts.mismatch ?? 0} real mismatches, ${counts.error ?? 0} service errors, ${counts.skipped ?? 0} skipped`,
          noisyPaths.length
            ? `noisy paths (legacy answered differently to itself there; not counted against the service):\n${noisyPaths.slice(0, 20).map((n) => `  ${n.path}  ${n.times}×`).join('\n')}${noisyPaths.length > 20 ? `\n  … ${noisyPaths.length - 20} more (--json)` : ''}`
            : 'noisy paths: none seen',
          samples.length ? 'real mismatches, newest first:' : 'real mismatches: none sampled',
          ...samples.map((s) => `\n${s.at} ${s.method} ${s.path} (request ${s.requestId})\n  legacy ${s.legacy.status}, service ${s.service?.status ?? 'no answer'}\n${s.diffs.map((d) => `  ${d.kind} ${d.path}: legacy ${JSON.stringify(d.legacy)} service ${JSON.stringify(d.service)}`).join('\n')}`),
        ].join('\n'),
      );
    } finally {
      await close();
    }
  },
};

/** `strangler control init`: creates the control schema (idempotent). */
export const controlCommand: CommandModule<GlobalArgs, GlobalArgs & { action: string }> = {
  command: 'control <action>',
  describe: 'the control database: init (create it when missing, create or upgrade its schema; idempotent)',
  builder: (y: Argv<GlobalArgs>) => y.positional('action', { choices: ['init'] as const, demandOption: true }) as unknown as Argv<GlobalArgs & { action: string }>,
  handler: async (args) => {
    const config = await resolveCliConfig(args);
    const { migrateControl } = await import('../../migrations/control/index.ts');
    const { ensureDatabase } = await import('../../core/databases.ts');
    // A monolith's own cluster has no control database yet: made here, or the error says how.
    const created = await ensureDatabase(config.control.databaseUrl, 'the control database');
    const applied = await migrateControl(config.control.databaseUrl, config.control.schema);
    output(args, { created, applied }, () => `${created ? 'control database created; ' : ''}${applied.length ? `control database ready (applied ${applied.join(', ')})` : 'control database already up to date'}`);
  },
};

/** `strangler plan --coupling`: what strangler.yaml's boundaries leave open in the monolith's schema. */
async function couplingReport(args: StatusArgs): Promise<void> {
  const config = await resolveCliConfig(args);
  const pg = (await import('pg')).default;
  const { readSchemaGraph } = await import('../init/schema-graph.ts');
  const { checkCoupling } = await import('../init/boundaries.ts');
  const client = new pg.Client({ connectionString: config.legacy.databaseUrl, connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    const lines = checkCoupling(await readSchemaGraph(client), config.services);
    output(args, { couplings: lines }, () => (lines.length ? lines.map((l) => `- ${l}`).join('\n') : 'no coupling left open: every foreign key across the boundaries has a read-only copy, and the order follows them'));
  } finally {
    await client.end().catch(() => undefined);
  }
}
