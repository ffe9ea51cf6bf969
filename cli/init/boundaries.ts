import { parse as parseYaml } from 'yaml';
import { StranglerError } from '../../core/errors.ts';
import type { SchemaGraph } from './schema-graph.ts';

/** Route prefixes from an OpenAPI document: the paths' first two segments (/api/invoices/{id} → /api/invoices). */
export function prefixesFromOpenApi(text: string): string[] {
  const doc = parseYaml(text) as { paths?: Record<string, unknown> } | null;
  const paths = Object.keys(doc?.paths ?? {});
  if (!paths.length) throw new StranglerError('the OpenAPI document has no paths', 'BAD_INPUT');
  return [...new Set(paths.map((p) => `/${p.split('/').filter((s) => s && !s.startsWith('{')).slice(0, 2).join('/')}`.toLowerCase()).filter((p) => p !== '/'))];
}

/**
 * Pure: service boundaries proposed from a monolith's schema and the route prefixes to move
 * (the roadmap's "which service first" made from the real tables), and the couplings the
 * boundaries cut. Heuristics, stated: a table goes to the service its name matches; a table
 * that matches none follows the tables it references when they all belong to one service (an
 * invoice's items follow the invoice); every foreign key that crosses a boundary is a coupling:
 * a read-only copy of the referenced table in the referencing service, or a call to cut.
 */

export interface ServiceSeed {
  name: string;
  prefix: string;
}

export interface Coupling {
  /** The referencing table and the service (or 'legacy') it is in. */
  from: { table: string; columns: string[]; service: string };
  /** The referenced table and its owner. */
  to: { table: string; service: string };
  /** copy: the referencing service keeps a read-only copy of the referenced table; stays: the monolith references a table that moves. */
  kind: 'copy' | 'stays';
  /** In plain words, with the choices. */
  advice: string;
}

export interface ProposedService {
  name: string;
  prefix: string;
  order: number;
  dependsOn: string[];
  tables: Array<{ source: string; replica?: boolean; why: string }>;
}

export interface Proposal {
  services: ProposedService[];
  /** Tables no service takes: they stay in the monolith. */
  unassigned: string[];
  couplings: Coupling[];
  /** Tables that cannot be synced as they are, and the statement that fixes each. */
  noKey: Array<{ table: string; fix: string }>;
  /** Services that reference each other's tables in a circle: one of those couplings must be cut. */
  cycles: string[][];
}

/** A table referenced by more tables than this is a hub: the tables referencing it do not follow it. */
const HUB = 2;

/** Words for the same thing: an auth service owns the users. */
const ALIASES: Record<string, string[]> = {
  auth: ['user', 'account', 'session', 'role', 'permission', 'credential', 'token', 'login', 'identity'],
  user: ['account', 'profile'],
  account: ['user'],
  billing: ['invoice', 'payment', 'charge', 'subscription'],
  ocr: ['document', 'scan'],
  chat: ['message', 'conversation'],
  catalog: ['product', 'category'],
  order: ['cart', 'checkout'],
};

/** The singular of a word, near enough for table names (invoices → invoice, categories → category). */
function stem(word: string): string {
  const w = word.toLowerCase();
  if (w.endsWith('ies')) return `${w.slice(0, -3)}y`;
  if (w.endsWith('sses') || w.endsWith('xes') || w.endsWith('ses')) return w.slice(0, -2);
  if (w.endsWith('s') && !w.endsWith('ss')) return w.slice(0, -1);
  return w;
}
const words = (name: string) => name.toLowerCase().split(/[^a-z0-9]+/).filter(Boolean).map(stem);

/** How well a table's name matches a service: 3 its first word, 2 another word, 1 an alias, 0 none. */
export function nameScore(table: string, service: string): number {
  const t = words(table);
  const s = stem(service);
  if (t[0] === s) return 3;
  if (t.includes(s)) return 2;
  if ((ALIASES[s] ?? []).some((a) => t.includes(stem(a)))) return 1;
  return 0;
}

export function proposeBoundaries(graph: SchemaGraph, seeds: readonly ServiceSeed[]): Proposal {
  const owner = new Map<string, { service: string; why: string }>();
  for (const t of graph.tables) {
    const scored = seeds.map((s) => ({ s, score: nameScore(t.name, s.name) })).filter((x) => x.score > 0).sort((a, b) => b.score - a.score);
    if (scored.length && (scored.length === 1 || scored[0].score > scored[1].score)) owner.set(t.name, { service: scored[0].s.name, why: `its name matches ${scored[0].s.name}` });
  }
  // Children follow their parents: a table referencing only tables of one service, and
  // referenced by no other service's tables, goes with them. Not a hub's children: a table
  // half the schema references (users) says nothing about where each of those belongs.
  const referencers = (table: string) => new Set(graph.foreignKeys.filter((f) => f.references === table && f.table !== table).map((f) => f.table)).size;
  for (let changed = true; changed; ) {
    changed = false;
    for (const t of graph.tables) {
      if (owner.has(t.name)) continue;
      const refs = graph.foreignKeys.filter((f) => f.table === t.name && f.references !== t.name);
      if (refs.some((f) => referencers(f.references) > HUB)) continue;
      const parents = [...new Set(refs.map((f) => owner.get(f.references)?.service ?? 'legacy'))];
      const children = [...new Set(graph.foreignKeys.filter((f) => f.references === t.name && f.table !== t.name && owner.has(f.table)).map((f) => owner.get(f.table)!.service))];
      if (parents.length === 1 && parents[0] !== 'legacy' && children.every((c) => c === parents[0])) {
        const via = graph.foreignKeys.find((f) => f.table === t.name && owner.get(f.references)?.service === parents[0])!;
        owner.set(t.name, { service: parents[0], why: `it references ${via.references} (${via.columns.join(', ')})` });
        changed = true;
      }
    }
  }
  const serviceOf = (table: string) => owner.get(table)?.service ?? 'legacy';

  const couplings: Coupling[] = [];
  const copies = new Map<string, Map<string, string>>(); // service → copied table → why
  const depends = new Map<string, Set<string>>(seeds.map((s) => [s.name, new Set<string>()]));
  for (const f of graph.foreignKeys) {
    const from = serviceOf(f.table);
    const to = serviceOf(f.references);
    if (from === to) continue;
    const ref = `${f.table}.${f.columns.join(', ')} → ${f.references}`;
    if (from === 'legacy') {
      couplings.push({
        from: { table: f.table, columns: f.columns, service: 'legacy' },
        to: { table: f.references, service: to },
        kind: 'stays',
        advice: `${ref}: the monolith keeps referencing a table that moves to ${to}; the reverse sync keeps ${f.references} complete on legacy until ${to} is finalized, so move ${f.table} too before then, or cut the reference (the monolith asks ${to} instead)`,
      });
      continue;
    }
    if (!copies.has(from)) copies.set(from, new Map());
    copies.get(from)!.set(f.references, ref);
    if (to !== 'legacy') depends.get(from)!.add(to);
    couplings.push({
      from: { table: f.table, columns: f.columns, service: from },
      to: { table: f.references, service: to },
      kind: 'copy',
      advice: `${ref}: ${from} reads ${f.references}${to === 'legacy' ? ' (which stays in the monolith)' : ` (owned by ${to})`}; ${from} keeps a read-only copy of it (mapped with replica: true), or the coupling is cut (${from} asks ${to === 'legacy' ? 'the monolith' : to} instead)`,
    });
  }

  const { order, cycles } = topoOrder(seeds.map((s) => s.name), depends);
  const services: ProposedService[] = order.map((name, i) => ({
    name,
    prefix: seeds.find((s) => s.name === name)!.prefix,
    order: i + 1,
    dependsOn: [...depends.get(name)!].filter((d) => !cycles.some((c) => c.includes(d) && c.includes(name))).sort(),
    tables: [
      ...graph.tables.filter((t) => owner.get(t.name)?.service === name).map((t) => ({ source: t.name, why: owner.get(t.name)!.why })),
      ...[...(copies.get(name) ?? new Map<string, string>())].map(([table, why]) => ({ source: table, replica: true, why: `a read-only copy: ${why}` })),
    ],
  }));
  return {
    services,
    unassigned: graph.tables.filter((t) => !owner.has(t.name)).map((t) => t.name),
    couplings,
    noKey: graph.tables
      .filter((t) => t.key.length === 0 && (owner.has(t.name) || services.some((s) => s.tables.some((x) => x.source === t.name))))
      .map((t) => ({ table: t.name, fix: `ALTER TABLE ${t.name} ADD PRIMARY KEY (<column>);  or, with a unique index on NOT NULL columns: ALTER TABLE ${t.name} REPLICA IDENTITY USING INDEX <index>;` })),
    cycles,
  };
}

/** Dependencies first; among equals, the order given. A circle is reported and broken at the first of its services. */
export function topoOrder(names: readonly string[], depends: ReadonlyMap<string, ReadonlySet<string>>): { order: string[]; cycles: string[][] } {
  const order: string[] = [];
  const cycles: string[][] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (n: string, path: string[]) => {
    if (state.get(n) === 'done') return;
    if (state.get(n) === 'visiting') {
      cycles.push(path.slice(path.indexOf(n)));
      return;
    }
    state.set(n, 'visiting');
    for (const d of names.filter((x) => depends.get(n)?.has(x))) visit(d, [...path, n]);
    state.set(n, 'done');
    order.push(n);
  };
  for (const n of names) visit(n, []);
  return { order, cycles };
}

/**
 * Pure: the couplings an existing strangler.yaml leaves open: foreign keys crossing its
 * boundaries with no read-only copy mapped, and dependsOn that the foreign keys contradict.
 */
export function checkCoupling(graph: SchemaGraph, services: ReadonlyArray<{ name: string; order: number; dependsOn: string[]; tables: Array<{ source: string; replica: boolean }> }>): string[] {
  const owner = new Map<string, string>();
  for (const s of services) for (const t of s.tables) if (!t.replica) owner.set(t.source, s.name);
  const lines: string[] = [];
  for (const f of graph.foreignKeys) {
    const from = owner.get(f.table) ?? 'legacy';
    const to = owner.get(f.references) ?? 'legacy';
    if (from === to) continue;
    const ref = `${f.table}.${f.columns.join(', ')} → ${f.references}`;
    if (from === 'legacy') {
      lines.push(`${ref}: the monolith references a table ${to} takes over; keep the reverse sync until ${f.table} moves too, or cut the reference`);
      continue;
    }
    const service = services.find((s) => s.name === from)!;
    if (!service.tables.some((t) => t.source === f.references && t.replica)) lines.push(`${ref}: ${from} reads ${f.references} (${to === 'legacy' ? 'the monolith' : to}) but keeps no copy of it: add { source: ${f.references}, replica: true } to ${from}'s tables, or cut the coupling`);
    const owning = services.find((s) => s.name === to);
    if (owning && !service.dependsOn.includes(to) && owning.order > service.order) lines.push(`${ref}: ${from} (order ${service.order}) moves before ${to} (order ${owning.order}), whose table it references; consider dependsOn: [${to}]`);
  }
  for (const t of graph.tables) {
    if (t.key.length === 0 && services.some((s) => s.tables.some((x) => x.source === t.name))) lines.push(`${t.name} has no primary key or replica identity: it cannot be synced; run: ALTER TABLE ${t.name} ADD PRIMARY KEY (<column>);`);
  }
  return lines;
}
