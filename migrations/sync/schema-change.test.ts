import { describe, expect, it } from 'vitest';
import { decideShape, widens, type RelationColumn, type ShapeColumn, type TableRules } from './schema-change.ts';

const shape: ShapeColumn[] = [
  { source: 'id', target: 'id', type: 'integer', status: 'mapped' },
  { source: 'customer_email', target: 'customer_email', type: 'text', status: 'mapped' },
  { source: 'total', target: 'total', type: 'numeric(12,2)', status: 'mapped' },
];
const relation = (cols: Array<[string, string]>): RelationColumn[] => cols.map(([name, type]) => ({ name, type, userDefined: false }));
const base: Array<[string, string]> = [
  ['id', 'integer'],
  ['customer_email', 'text'],
  ['total', 'numeric(12,2)'],
];
const targetTypes = new Map([
  ['id', 'integer'],
  ['customer_email', 'text'],
  ['total', 'numeric(12,2)'],
]);
const rules = (r: Partial<TableRules> = {}): TableRules => ({ columns: {}, exclude: [], newColumn: 'ignore', ...r });
const decide = (cols: Array<[string, string]>, r: Partial<TableRules> = {}, target = targetTypes, alter = true) => decideShape('invoices', shape, relation(cols), rules(r), target, alter, 'invoices');

describe('schema changes a pipeline sees', () => {
  it('goes on unchanged when the relation matches the shape applied so far', () => {
    expect(decide(base)).toMatchObject({ stop: null, changes: [], actions: [], shape });
  });

  it('ignores a new column by default: recorded, not carried', () => {
    const d = decide([...base, ['note', 'text']]);
    expect(d.stop).toBeNull();
    expect(d.changes).toEqual([{ kind: 'new-column', column: 'note', detail: 'text, not carried', action: 'ignored' }]);
    expect(d.shape.find((c) => c.source === 'note')).toMatchObject({ status: 'ignored' });
    // Seen once: the next relation message with it changes nothing.
    expect(decideShape('invoices', d.shape, relation([...base, ['note', 'text']]), rules(), targetTypes, true, 'invoices').changes).toEqual([]);
  });

  it('adds a new column to the target under the add policy, never to the monolith', () => {
    const d = decide([...base, ['note', 'text']], { newColumn: 'add' });
    expect(d.actions).toEqual([{ kind: 'add-column', target: 'note', type: 'text' }]);
    expect(d.shape.find((c) => c.source === 'note')).toMatchObject({ status: 'mapped' });
    const reverse = decide([...base, ['note', 'text']], { newColumn: 'add' }, targetTypes, false);
    expect(reverse.actions).toEqual([]);
    expect(reverse.changes[0]).toMatchObject({ action: 'ignored', detail: expect.stringMatching(/monolith/) });
  });

  it('stops on a new column under the stop policy', () => {
    expect(decide([...base, ['note', 'text']], { newColumn: 'stop' }).stop).toMatch(/new column note .* policy for new columns is stop/);
  });

  it('stops when a mapped column is renamed and nothing maps the new name, and names the fix', () => {
    const d = decide([['id', 'integer'], ['email_of_customer', 'text'], ['total', 'numeric(12,2)']]);
    expect(d.stop).toMatch(/column customer_email of invoices is gone .*columns: \{ <new name>: customer_email \}.*strangler sync resume invoices/);
    expect(d.changes).toContainEqual(expect.objectContaining({ kind: 'column-gone', column: 'customer_email', action: 'stopped' }));
  });

  it('applies a rename once the mapping names the new column', () => {
    const d = decide([['id', 'integer'], ['email_of_customer', 'text'], ['total', 'numeric(12,2)']], { columns: { email_of_customer: 'customer_email' } });
    expect(d.stop).toBeNull();
    expect(d.shape.map((c) => [c.source, c.target])).toEqual([
      ['id', 'id'],
      ['email_of_customer', 'customer_email'],
      ['total', 'total'],
    ]);
    expect(d.changes).toEqual([expect.objectContaining({ kind: 'renamed', action: 'applied' })]);
  });

  it('stops when a mapped column is dropped, and goes on once it is excluded', () => {
    expect(decide([['id', 'integer'], ['total', 'numeric(12,2)']]).stop).toMatch(/customer_email of invoices is gone/);
    expect(decide([['id', 'integer'], ['total', 'numeric(12,2)']], { exclude: ['customer_email'] }).stop).toBeNull();
  });

  it('stops on a type change the target may not hold, and widens the target for one it can', () => {
    expect(decide([['id', 'integer'], ['customer_email', 'integer'], ['total', 'numeric(12,2)']]).stop).toMatch(/changed type from text to integer/);
    const wider = decide([['id', 'integer'], ['customer_email', 'text'], ['total', 'numeric(14,2)']]);
    expect(wider.stop).toBeNull();
    expect(wider.actions).toEqual([{ kind: 'alter-type', target: 'total', type: 'numeric(14,2)' }]);
    expect(wider.changes).toEqual([{ kind: 'type-changed', column: 'total', detail: 'numeric(12,2) → numeric(14,2)', action: 'widened' }]);
    // A target already as wide needs nothing; the monolith is never altered.
    expect(decide([['id', 'integer'], ['customer_email', 'text'], ['total', 'numeric(14,2)']], {}, new Map([...targetTypes, ['total', 'numeric']])).actions).toEqual([]);
    expect(decide([['id', 'integer'], ['customer_email', 'text'], ['total', 'numeric(14,2)']], {}, targetTypes, false).stop).toMatch(/widen it there/);
  });
});

describe('widening types', () => {
  it.each([
    ['character varying(20)', 'character varying(40)', true],
    ['character varying(40)', 'character varying(20)', false],
    ['character varying(20)', 'text', true],
    ['numeric(12,2)', 'numeric(14,2)', true],
    ['numeric(12,2)', 'numeric(12,3)', false],
    ['numeric(12,2)', 'numeric(13,3)', true],
    ['numeric(12,2)', 'numeric', true],
    ['smallint', 'integer', true],
    ['integer', 'bigint', true],
    ['bigint', 'integer', false],
    ['real', 'double precision', true],
    ['timestamp(3) without time zone', 'timestamp(6) without time zone', true],
    ['timestamp(3) without time zone', 'timestamp without time zone', true],
    ['timestamp without time zone', 'timestamp with time zone', false],
    ['text', 'integer', false],
  ])('%s → %s: %s', (from, to, ok) => {
    expect(widens(from, to)).toBe(ok);
  });
});
