import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { StranglerError } from '../../core/errors.ts';
import { output, type GlobalArgs } from '../context.ts';

interface InitArgs extends GlobalArgs {
  legacyDatabase: string;
  prefixes?: string[];
  openapi?: string;
  out: string;
  force?: boolean;
  dryRun?: boolean;
}

/** `strangler init`: a starting strangler.yaml from the monolith's schema. */
export const initCommand: CommandModule<GlobalArgs, InitArgs> = {
  command: 'init',
  describe: "write a starting strangler.yaml from the monolith's database: services and their tables, couplings, no-key tables, extraction order (reads only)",
  builder: (y: Argv<GlobalArgs>) =>
    y
      .option('legacy-database', { type: 'string', demandOption: true, describe: "the monolith's database URL (postgres://…)" })
      .option('prefixes', { type: 'string', array: true, describe: 'route prefixes to move, one service each (/api/auth /api/invoices …)' })
      .option('openapi', { type: 'string', describe: 'an OpenAPI file (JSON or YAML) to take the prefixes from' })
      .option('out', { type: 'string', default: 'strangler.yaml', describe: 'where to write it' })
      .option('force', { type: 'boolean', describe: 'overwrite an existing file' })
      .option('dry-run', { type: 'boolean', describe: 'print it instead of writing it' })
      .example('$0 init --legacy-database postgres://app@db/shop --prefixes /api/auth /api/orders', '') as unknown as Argv<InitArgs>,
  handler: async (args) => {
    // The YAML parser, the schema and pg load here, not at the top: `--help` stays fast.
    const { prefixesFromOpenApi } = await import('../init/boundaries.ts');
    if (!/^postgres(ql)?:\/\//.test(args.legacyDatabase)) throw new StranglerError(`--legacy-database must be a postgres:// URL, not ${JSON.stringify(args.legacyDatabase)}`, 'BAD_INPUT');
    const prefixes = args.openapi ? prefixesFromOpenApi(readFileSync(args.openapi, 'utf8')) : (args.prefixes ?? []).flatMap((p) => p.split(',')).map((p) => p.trim().replace(/\/+$/, '').toLowerCase());
    if (!prefixes.length) throw new StranglerError('say which prefixes move: --prefixes /api/auth /api/invoices … or --openapi <file>', 'BAD_INPUT');
    const bad = prefixes.filter((p) => !/^(\/[a-z0-9][a-z0-9._-]*)+$/.test(p));
    if (bad.length) throw new StranglerError(`not a route prefix: ${bad.join(', ')} (expected /api/invoices: lowercase, no trailing slash)`, 'BAD_INPUT');
    const out = resolve(args.out);
    if (!args.dryRun && existsSync(out) && !args.force) throw new StranglerError(`${out} exists; pass --force to overwrite it, or --out another file`, 'CONFLICT');
    const seeds = prefixes.map((prefix) => ({ prefix, name: prefix.split('/').pop()!.replace(/[^a-z0-9-]/g, '-') }));
    const pg = (await import('pg')).default;
    const { readSchemaGraph } = await import('../init/schema-graph.ts');
    const { proposeBoundaries } = await import('../init/boundaries.ts');
    const { renderStranglerYaml } = await import('../init/render-yaml.ts');
    const client = new pg.Client({ connectionString: args.legacyDatabase, connectionTimeoutMillis: 10_000 });
    await client.connect();
    let graph;
    try {
      graph = await readSchemaGraph(client);
    } finally {
      await client.end().catch(() => undefined);
    }
    const proposal = proposeBoundaries(graph, seeds);
    const u = new URL(args.legacyDatabase);
    const postgresUrl = `${u.protocol}//${u.username ? `${u.username}@` : ''}${u.host}`;
    const text = renderStranglerYaml(proposal, graph, { legacyDatabaseUrl: args.legacyDatabase, postgresUrl, source: `${u.host}${u.pathname}`, at: new Date() });
    const { parse: parseYaml } = await import('yaml');
    const { resolveConfig } = await import('../../core/config/load.ts');
    resolveConfig(parseYaml(text), {}, out); // what is written must load
    if (!args.dryRun) writeFileSync(out, text);
    output(args, { file: args.dryRun ? null : out, ...proposal }, () =>
      [
        args.dryRun ? text : `wrote ${out}`,
        `extraction order: ${proposal.services.map((s) => `${s.order}. ${s.name} (${s.tables.filter((t) => !t.replica).length} tables${s.tables.some((t) => t.replica) ? `, copies of ${s.tables.filter((t) => t.replica).map((t) => t.source).join(', ')}` : ''})`).join('  ')}`,
        ...(proposal.couplings.length ? [`${proposal.couplings.length} coupling(s) across the boundaries: see the comments at the end of the file`] : []),
        ...(proposal.noKey.length ? [`cannot be synced as they are: ${proposal.noKey.map((n) => n.table).join(', ')} (no primary key; the file says what to run)`] : []),
        ...(proposal.unassigned.length ? [`left in the monolith: ${proposal.unassigned.join(', ')}`] : []),
        'next: strangler doctor, then strangler sync start <service>',
      ].join('\n'),
    );
  },
};
