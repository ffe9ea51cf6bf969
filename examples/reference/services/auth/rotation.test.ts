import { describe, expect, it } from 'vitest';
import { keyPolicy } from './keys.ts';
import { planRotation, publishedAt, signingKeyAt, type KeyRow } from './rotation.ts';

const policy = { publishAheadMs: 10_000, keepRetiredMs: 60_000 };
const t = (s: number) => new Date(Date.UTC(2026, 0, 1) + s * 1000);
const key = (kid: string, created: number, activates: number, retired: number | null = null): KeyRow => ({ kid, createdAt: t(created), activatesAt: t(activates), retiredAt: retired === null ? null : t(retired) });

describe('signing key rotation (pure)', () => {
  it('publishes the new key now, signs with it publishAheadMs later, and retires the current key at that moment', () => {
    const plan = planRotation([key('a', 0, 0)], t(100), policy);
    expect(plan.add.activatesAt).toEqual(t(110));
    expect(plan.retire).toEqual([{ kid: 'a', retiredAt: t(110), inJwksUntil: t(170) }]);
    expect(plan.remove).toEqual([]);
  });

  it('deletes only keys retired longer ago than keepRetiredMs (every token they signed has expired)', () => {
    const keys = [key('old', 0, 0, 10), key('recent', 5, 10, 90), key('cur', 80, 90)];
    expect(planRotation(keys, t(100), policy).remove).toEqual(['old']);
  });

  it('revokes: the new key signs at once and every other key is deleted', () => {
    const plan = planRotation([key('a', 0, 0, 50), key('b', 40, 50)], t(100), policy, { revoke: true });
    expect(plan.add.activatesAt).toEqual(t(100));
    expect(plan.retire).toEqual([]);
    expect(plan.remove).toEqual(['a', 'b']);
  });

  const cases: Array<[string, number, string, string[]]> = [
    ['before the new key activates: the old one signs, both are published', 105, 'a', ['a', 'b']],
    ['once it activates: the new one signs, both are published', 110, 'b', ['a', 'b']],
    ['after keepRetiredMs: only the new one is published', 171, 'b', ['b']],
  ];
  it.each(cases)('%s', (_label, at, signing, published) => {
    const keys = [key('a', 0, 0, 110), key('b', 100, 110)];
    expect(signingKeyAt(keys, t(at))?.kid).toBe(signing);
    expect(publishedAt(keys, t(at), policy).map((k) => k.kid)).toEqual(published);
  });

  it('keeps a retired key published for the token lifetime plus the clock tolerance, and publishes ahead of the JWKS cache lifetime', () => {
    expect(keyPolicy(3600)).toEqual({ publishAheadMs: 310_000, keepRetiredMs: 3_665_000 });
  });
});
