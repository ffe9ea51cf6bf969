import { describe, expect, it } from 'vitest';
import { LagHistory } from './lag-history.ts';

describe('the lag history of the dashboard', () => {
  it('keeps the newest samples of each pipeline up to its capacity, oldest first', () => {
    const h = new LagHistory(3);
    for (let t = 1; t <= 5; t++) h.add('auth forward', { t, lagBytes: t * 10, lagSeconds: null, rowsApplied: t });
    h.add('auth reverse', { t: 9, lagBytes: 0, lagSeconds: 0, rowsApplied: 0 });
    expect(h.get('auth forward').map((p) => p.t)).toEqual([3, 4, 5]);
    expect(h.get('auth reverse')).toHaveLength(1);
    expect(h.get('nothing')).toEqual([]);
  });
});
