import { stringify } from 'yaml';
import type { Proposal } from './boundaries.ts';
import type { SchemaGraph } from './schema-graph.ts';

/**
 * Pure: a starting strangler.yaml for a proposal, with the reasoning as comments: why each
 * table went where, the couplings and what each one means, what cannot be synced and its fix,
 * the sequences, the tables left in the monolith. Secrets are never written (docs/security.md).
 */
export function renderStranglerYaml(p: Proposal, graph: SchemaGraph, o: { legacyDatabaseUrl: string; postgresUrl: string; source: string; at: Date; firstPort?: number }): string {
  const firstPort = o.firstPort ?? 5002;
  const doc = {
    postgres: { url: o.postgresUrl },
    legacy: { database: o.legacyDatabaseUrl, port: 5001 },
    services: p.services.map((s, i) => ({
      name: s.name,
      prefix: s.prefix,
      port: firstPort + i,
      database: `svc_${s.name.replace(/-/g, '_')}`,
      order: s.order,
      ...(s.dependsOn.length ? { dependsOn: s.dependsOn } : {}),
      tables: s.tables.map((t) => ({ source: t.source, ...(t.replica ? { replica: true } : {}) })),
    })),
  };
  const why = new Map(p.services.flatMap((s) => s.tables.map((t) => [`${s.name}:${t.source}`, t.why] as const)));
  // Comments beside each table entry say why it is there.
  const body = stringify(doc, { lineWidth: 0 })
    .split('\n')
    .reduce<{ lines: string[]; service: string }>(
      (acc, line) => {
        const name = /^ {2}- name: (.+)$/.exec(line);
        if (name) acc.service = name[1];
        const table = /^( {6}- source: )(\S+)$/.exec(line);
        const reason = table ? why.get(`${acc.service}:${table[2]}`) : undefined;
        acc.lines.push(reason ? `${line}  # ${reason}` : line);
        return acc;
      },
      { lines: [], service: '' },
    ).lines;
  const header = [
    `# strangler.yaml written by \`strangler init\` from ${o.source} on ${o.at.toISOString().slice(0, 10)}.`,
    '# A starting point made from the schema alone: review every service, table and order below.',
    '# The monolith\'s JWT secret and the admin token are not written here: see docs/security.md.',
    '#',
    `# Extraction order (dependencies first): ${p.services.map((s) => s.name).join(' → ') || 'none'}`,
  ];
  const footer: string[] = [];
  if (p.couplings.length) footer.push('', '# Couplings across the boundaries (each foreign key between services):', ...p.couplings.map((c) => `#   ${c.advice}`));
  if (p.cycles.length) footer.push('', '# Services that reference each other in a circle (one coupling must be cut to move them apart):', ...p.cycles.map((c) => `#   ${c.join(' → ')} → ${c[0]}`));
  if (p.noKey.length) footer.push('', '# Tables that cannot be synced as they are (no primary key or replica identity):', ...p.noKey.map((n) => `#   ${n.table}: ${n.fix}`));
  if (p.unassigned.length) footer.push('', `# Tables no service takes (they stay in the monolith): ${p.unassigned.join(', ')}`);
  if (graph.sequences.length) footer.push('', `# Sequences (a service's own ids start at sync.idRangeStart, 1,000,000,001, above these): ${graph.sequences.map((s) => `${s.table}.${s.column} at ${s.lastValue ?? 'unused'}`).join(', ')}`);
  return `${[...header, '', ...body].join('\n').trimEnd()}\n${footer.join('\n')}\n`;
}
