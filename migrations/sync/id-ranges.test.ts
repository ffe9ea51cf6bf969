import { describe, expect, it } from 'vitest';
import { idRangeFindings, type KeyGenerator } from './id-ranges.ts';

const START = 1_000_000_001n;
const gen = (g: Partial<KeyGenerator>): KeyGenerator => ({ table: 'invoices', column: 'id', type: 'integer', kind: 'sequence', sequence: 'invoices_id_seq', minValue: START, nextValue: START, maxId: null, ...g });
const find = (g: Partial<KeyGenerator>, legacyMax: bigint | null = 5_000n) => idRangeFindings([gen(g)], new Map([['invoices', legacyMax]]), START, (t) => t)[0];

describe('id ranges of a service database', () => {
  it('passes a sequence that starts in the service range, above the monolith', () => {
    expect(find({})).toMatchObject({ ok: true, fix: [] });
  });

  it('refuses a serial from 1 and says how to move it, past the ids the service already has', () => {
    const f = find({ minValue: 1n, nextValue: 12n, maxId: 11n });
    expect(f.ok).toBe(false);
    expect(f.fix).toEqual(['ALTER SEQUENCE invoices_id_seq MINVALUE 1000000001 START WITH 1000000001 RESTART WITH 1000000001;']);
    expect(find({ minValue: 1n, nextValue: START + 5n, maxId: START + 4n }).fix).toEqual(['ALTER SEQUENCE invoices_id_seq MINVALUE 1000000001 START WITH 1000000001 RESTART WITH 1000000006;']);
  });

  it('gives a key with no default a sequence of its own in the range', () => {
    const f = find({ kind: 'none', sequence: null, minValue: null, nextValue: null });
    expect(f.ok).toBe(false);
    expect(f.fix.join(' ')).toMatch(/CREATE SEQUENCE IF NOT EXISTS "invoices_id_strangler_seq" AS integer MINVALUE 1000000001 START WITH 1000000001;.*SET DEFAULT nextval\('"invoices_id_strangler_seq"'\).*OWNED BY "invoices"\."id"/);
  });

  it('moves an identity column with ALTER COLUMN, not ALTER SEQUENCE', () => {
    expect(find({ kind: 'identity', minValue: 1n, nextValue: 1n }).fix).toEqual(['ALTER TABLE "invoices" ALTER COLUMN "id" SET MINVALUE 1000000001 SET START WITH 1000000001 RESTART WITH 1000000001;']);
  });

  it('refuses, with no statement to run, when the monolith already has ids in the range', () => {
    expect(find({}, START + 10n)).toMatchObject({ ok: false, fix: [], detail: expect.stringMatching(/choose a higher sync\.idRangeStart/) });
  });

  it('refuses a smallint key: no range above the monolith fits', () => {
    expect(find({ type: 'smallint' })).toMatchObject({ ok: false, fix: [], detail: expect.stringMatching(/widen it/) });
  });
});
