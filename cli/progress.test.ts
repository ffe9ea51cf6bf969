import { describe, expect, it } from 'vitest';
import { ackProgress } from './commands/cutover.ts';
import { createProgress, formatProgress } from './progress.ts';

/** A stream that keeps what is written; `isTTY` says whether it stands for a terminal. */
function stream(isTTY: boolean) {
  const writes: string[] = [];
  return { isTTY, writes, write: (s: string) => writes.push(s), text: () => writes.join('') };
}

/** A clock the test moves by hand: no test here waits on real time. */
function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

describe('formatProgress', () => {
  it('shows a bar, the count of the total, the rate and the time left', () => {
    expect(formatProgress({ label: 'backfill users', unit: 'rows' }, { done: 250, total: 1000, detail: 'table 1/2' }, 5_000)).toBe('backfill users [######..................]  25% 250/1000 rows, 50 rows/s, ETA 15 s, table 1/2');
  });

  it('writes long waits in minutes and hours', () => {
    expect(formatProgress({ label: 'x', unit: 'rows' }, { done: 1, total: 301, detail: undefined }, 1_000)).toMatch(/ETA 5 min$/);
    expect(formatProgress({ label: 'x', unit: 'rows' }, { done: 1, total: 7_201 }, 1_000)).toMatch(/ETA 2 h 0 min$/);
  });

  it('has no bar and no ETA when the total is not known, and no ETA before anything moved', () => {
    expect(formatProgress({ label: 'x', unit: 'rows' }, { done: 30, total: null }, 3_000)).toBe('x 30 rows, 10 rows/s');
    expect(formatProgress({ label: 'x', unit: 'rows' }, { done: 0, total: 10 }, 3_000)).toMatch(/0% 0\/10 rows, 0 rows\/s, ETA -$/);
  });

  it('writes counts and rates with the given format (MB of WAL)', () => {
    const mb = (n: number) => (n / 1024 / 1024).toFixed(1);
    expect(formatProgress({ label: 'catching up', unit: 'MB', format: mb }, { done: 1024 * 1024, total: 4 * 1024 * 1024 }, 2_000)).toBe('catching up [######..................]  25% 1.0/4.0 MB, 0.5 MB/s, ETA 6 s');
  });
});

describe('createProgress without a terminal', () => {
  it('prints a plain line every 5 s and at each milestone, never a carriage return', () => {
    const out = stream(false);
    const c = clock();
    const p = createProgress({ label: 'backfill users', unit: 'rows', stream: out, now: c.now });
    p.update({ done: 0, total: 100 }, true); // a table starts: a milestone
    for (let i = 1; i <= 12; i++) {
      c.advance(1_000);
      p.update({ done: i * 5, total: 100 });
    }
    c.advance(500);
    p.update({ done: 100, total: 100 }, true); // the table is done
    p.finish();
    expect(out.writes).toEqual([
      'backfill users [........................]   0% 0/100 rows, 0 rows/s, ETA -\n',
      'backfill users [######..................]  25% 25/100 rows, 5 rows/s, ETA 15 s\n',
      'backfill users [############............]  50% 50/100 rows, 5 rows/s, ETA 10 s\n',
      'backfill users [########################] 100% 100/100 rows, 8 rows/s, ETA 0 s\n',
    ]);
  });

  it('restarts the rate when the count goes down (the next table)', () => {
    const out = stream(false);
    const c = clock();
    const p = createProgress({ label: 'l', unit: 'rows', stream: out, now: c.now });
    c.advance(10_000);
    p.update({ done: 1_000, total: 1_000 }, true);
    c.advance(1_000);
    p.update({ done: 10, total: 100 }, true);
    expect(out.writes[1]).toBe('l [##......................]  10% 10/100 rows, 0 rows/s, ETA -\n');
    c.advance(2_000);
    p.update({ done: 50, total: 100 }, true);
    expect(out.writes[2]).toBe('l [############............]  50% 50/100 rows, 25 rows/s, ETA 2 s\n');
  });
});

describe('createProgress on a terminal', () => {
  it('redraws one line in place, at most ten times a second, and ends it with a newline', () => {
    const out = stream(true);
    const c = clock();
    const p = createProgress({ label: 'verify invoices', unit: 'chunks', stream: out, now: c.now });
    p.update({ done: 0, total: 4, detail: 'table 1/1' }, true);
    c.advance(1_000);
    p.update({ done: 1, total: 4, detail: 'table 1/1' });
    c.advance(10); // too soon to redraw
    p.update({ done: 2, total: 4, detail: 'table 1/1' });
    c.advance(990);
    p.update({ done: 4, total: 4, detail: 'table 1/1' });
    p.finish();
    expect(out.writes).toEqual([
      '\rverify invoices [........................]   0% 0/4 chunks, 0 chunks/s, ETA -, table 1/1\x1b[K',
      '\rverify invoices [######..................]  25% 1/4 chunks, 1 chunks/s, ETA 3 s, table 1/1\x1b[K',
      '\rverify invoices [########################] 100% 4/4 chunks, 2 chunks/s, ETA 0 s, table 1/1\x1b[K',
      '\n',
    ]);
  });

  it('draws the last figures when it finishes between redraws', () => {
    const out = stream(true);
    const c = clock();
    const p = createProgress({ label: 'l', unit: 'rows', stream: out, now: c.now });
    p.update({ done: 1, total: 2 });
    c.advance(5);
    p.update({ done: 2, total: 2 });
    p.finish();
    expect(out.text()).toMatch(/\rl \[#+\] 100% 2\/2 rows, \d+ rows\/s, ETA 0 s\x1b\[K\n$/);
  });
});

describe('the wait for gateways to acknowledge a route version', () => {
  it('shows acknowledged of live gateways on a terminal, and wipes the line once every one has', () => {
    const out = stream(true);
    const onWait = ackProgress(out);
    onWait({ version: 7, acknowledged: 1, live: 2, ms: 0, done: false });
    onWait({ version: 7, acknowledged: 2, live: 2, ms: 40, done: true });
    expect(out.writes[0]).toMatch(/^\rroute v7: acknowledged by \[#{12}\.{12}\]  50% 1\/2 gateways, .*waited 0\.0 s\x1b\[K$/);
    expect(out.writes.at(-1)).toBe('\r\x1b[K');
  });

  it('prints nothing without a terminal when the gateways answer at once', () => {
    const out = stream(false);
    const onWait = ackProgress(out);
    onWait({ version: 3, acknowledged: 0, live: 1, ms: 0, done: false });
    onWait({ version: 3, acknowledged: 1, live: 1, ms: 3, done: true });
    expect(out.writes).toEqual([]);
  });
});
