import { describe, expect, it } from 'vitest';
import { checkCoupling, nameScore, proposeBoundaries, topoOrder } from './boundaries.ts';
import type { SchemaGraph } from './schema-graph.ts';

const table = (name: string, key = ['id']) => ({ name, key, hasPrimaryKey: key.length > 0, replicaIdentity: 'default' as const, rows: 0 });
const fk = (t: string, col: string, ref: string) => ({ name: `${t}_${col}_fkey`, table: t, columns: [col], references: ref, referencedColumns: ['id'] });

/** The reference monolith's schema, plus a table with no key and one nobody takes. */
const shop: SchemaGraph = {
  tables: ['users', 'invoices', 'invoice_items', 'templates', 'ocr_documents', 'chat_messages', 'audit_trail', 'settings'].map((n) => table(n, n === 'audit_trail' ? [] : ['id'])),
  foreignKeys: [fk('invoices', 'user_id', 'users'), fk('invoice_items', 'invoice_id', 'invoices'), fk('templates', 'user_id', 'users'), fk('ocr_documents', 'user_id', 'users'), fk('chat_messages', 'user_id', 'users'), fk('audit_trail', 'user_id', 'users'), fk('settings', 'user_id', 'users'), fk('settings', 'default_invoice_id', 'invoices')],
  sequences: [{ table: 'users', column: 'id', sequence: 'public.users_id_seq', lastValue: 42 }],
};
const seeds = ['auth', 'invoices', 'templates', 'ocr', 'chat'].map((n) => ({ name: n, prefix: `/api/${n}` }));

describe('service boundaries from a schema', () => {
  it('matches table names to services, singular or plural, first word first, with aliases for auth', () => {
    expect(nameScore('invoices', 'invoices')).toBe(3);
    expect(nameScore('invoice_items', 'invoices')).toBe(3);
    expect(nameScore('ocr_documents', 'ocr')).toBe(3);
    expect(nameScore('users', 'auth')).toBe(1);
    expect(nameScore('categories', 'category')).toBe(3);
    expect(nameScore('settings', 'auth')).toBe(0);
  });

  it('proposes each prefix its tables, copies across boundaries, and moves the owner of shared tables first', () => {
    const p = proposeBoundaries(shop, seeds);
    expect(p.services.map((s) => [s.order, s.name, s.dependsOn])).toEqual([
      [1, 'auth', []],
      [2, 'invoices', ['auth']],
      [3, 'templates', ['auth']],
      [4, 'ocr', ['auth']],
      [5, 'chat', ['auth']],
    ]);
    expect(p.services[1].tables).toEqual([
      { source: 'invoices', why: 'its name matches invoices' },
      { source: 'invoice_items', why: 'its name matches invoices' },
      { source: 'users', replica: true, why: 'a read-only copy: invoices.user_id → users' },
    ]);
    expect(p.couplings.find((c) => c.from.table === 'invoices')).toMatchObject({ kind: 'copy', to: { table: 'users', service: 'auth' }, advice: expect.stringMatching(/keeps a read-only copy of it \(mapped with replica: true\), or the coupling is cut/) });
    // A table referencing two services' tables stays, and the monolith then references tables that move.
    expect(p.couplings.filter((c) => c.from.table === 'settings').map((c) => [c.kind, c.to.service])).toEqual([
      ['stays', 'auth'],
      ['stays', 'invoices'],
    ]);
    expect(p.couplings.find((c) => c.from.table === 'settings')!.advice).toMatch(/the monolith keeps referencing a table that moves to auth/);
    // users is referenced by half the schema: a table referencing it does not follow it.
    expect(p.unassigned).toEqual(['audit_trail', 'settings']);
    expect(p.services[0].tables.map((t) => t.source)).toEqual(['users']);
    expect(p.noKey).toEqual([]);
  });

  it('lets a table with no matching name follow the one service it references', () => {
    const graph: SchemaGraph = { tables: [table('orders'), table('line_entries'), table('users')], foreignKeys: [fk('line_entries', 'order_id', 'orders')], sequences: [] };
    const p = proposeBoundaries(graph, [{ name: 'orders', prefix: '/api/orders' }]);
    expect(p.services[0].tables).toContainEqual({ source: 'line_entries', why: 'it references orders (order_id)' });
  });

  it('flags a table without a key that a service would take, with the fix', () => {
    const graph: SchemaGraph = { tables: [table('invoices', [])], foreignKeys: [], sequences: [] };
    expect(proposeBoundaries(graph, [{ name: 'invoices', prefix: '/api/invoices' }]).noKey).toEqual([{ table: 'invoices', fix: expect.stringMatching(/^ALTER TABLE invoices ADD PRIMARY KEY/) }]);
  });

  it('reports services referencing each other in a circle', () => {
    expect(topoOrder(['a', 'b', 'c'], new Map([['a', new Set(['b'])], ['b', new Set(['a'])], ['c', new Set<string>()]]))).toEqual({ order: ['b', 'a', 'c'], cycles: [['a', 'b']] });
  });

  it('says what an existing strangler.yaml leaves open', () => {
    const lines = checkCoupling(shop, [
      { name: 'auth', order: 2, dependsOn: [], tables: [{ source: 'users', replica: false }] },
      { name: 'invoices', order: 1, dependsOn: [], tables: [{ source: 'invoices', replica: false }, { source: 'invoice_items', replica: false }] },
    ]);
    expect(lines).toContainEqual(expect.stringMatching(/^invoices\.user_id → users: invoices reads users \(auth\) but keeps no copy of it: add \{ source: users, replica: true \}/));
    expect(lines).toContainEqual(expect.stringMatching(/invoices \(order 1\) moves before auth \(order 2\).*dependsOn: \[auth\]/));
  });
});
