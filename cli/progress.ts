/**
 * The one progress reporter of long CLI work (backfill, verify, waits for gateways' acks): on a
 * terminal, one line redrawn in place with a bar, the rate and an ETA; otherwise (a supervisor,
 * a CI log, a pipe) a plain line at most every `everyMs`, and at each milestone (a table starts
 * or ends), so logs show progress without a line per update.
 */

/** Where the lines go: process.stderr, or any stream that says whether it is a terminal. */
export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
}

export interface ProgressFigures {
  done: number;
  /** null: not known (no bar, no ETA). */
  total: number | null;
  /** Said after the figures (`table 2/5`). */
  detail?: string;
}

export interface ProgressOptions {
  /** Starts each line (`backfill invoices`). */
  label: string;
  /** What is counted (`rows`, `chunks`, `gateways`). */
  unit: string;
  /** How a count is written (default: a whole number). */
  format?: (n: number) => string;
  stream?: ProgressStream;
  /** Without a terminal: at most one plain line per this many ms, milestones aside (default 5 s). */
  everyMs?: number;
  now?: () => number;
}

const WIDTH = 24;
const REDRAW_MS = 100;

function bar(done: number, total: number): string {
  const share = total > 0 ? Math.min(1, done / total) : 0;
  return `[${'#'.repeat(Math.round(share * WIDTH)).padEnd(WIDTH, '.')}] ${(share * 100).toFixed(0).padStart(3)}%`;
}

function duration(seconds: number): string {
  if (seconds < 90) return `${Math.ceil(seconds)} s`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

/** Pure: one progress line, from the figures and how long the count has been running. */
export function formatProgress(o: Pick<ProgressOptions, 'label' | 'unit' | 'format'>, f: ProgressFigures, elapsedMs: number): string {
  const n = o.format ?? ((x: number) => String(Math.round(x)));
  const rate = elapsedMs > 0 ? (f.done / elapsedMs) * 1000 : 0;
  const known = f.total !== null && f.total > 0;
  const eta = !known ? null : f.done >= f.total! ? '0 s' : rate > 0 ? duration((f.total! - f.done) / rate) : '-';
  const parts = [
    `${o.label} ${known ? `${bar(f.done, f.total!)} ` : ''}${n(f.done)}${known ? `/${n(f.total!)}` : ''} ${o.unit}`,
    `${o.format ? o.format(rate) : rate.toFixed(0)} ${o.unit}/s`,
    ...(eta !== null ? [`ETA ${eta}`] : []),
    ...(f.detail ? [f.detail] : []),
  ];
  return parts.join(', ');
}

export interface Progress {
  /** New figures; a milestone always prints a plain line. A count that goes down (the next table) restarts the rate. */
  update(f: ProgressFigures, milestone?: boolean): void;
  /** Ends the progress: on a terminal, the line is kept (`keep`, the default) or wiped. */
  finish(keep?: boolean): void;
}

export function createProgress(o: ProgressOptions): Progress {
  const stream = o.stream ?? process.stderr;
  const now = o.now ?? Date.now;
  const everyMs = o.everyMs ?? 5_000;
  const tty = stream.isTTY === true;
  let started = now();
  let lastDone = 0;
  let lastPlain = started;
  let lastDrawn = -Infinity;
  let shown = '';
  let latest = '';
  // Redrawn in place: carriage return, the line, erase what a longer line left.
  const draw = (line: string) => {
    if (line !== shown) stream.write(`\r${line}\x1b[K`);
    shown = line;
  };
  return {
    update(f, milestone = false) {
      const t = now();
      if (f.done < lastDone) started = t;
      lastDone = f.done;
      latest = formatProgress(o, f, t - started);
      if (tty) {
        // At most ten redraws a second: callers may report every few milliseconds.
        if (milestone || t - lastDrawn >= REDRAW_MS) {
          lastDrawn = t;
          draw(latest);
        }
      } else if (milestone || t - lastPlain >= everyMs) {
        lastPlain = t;
        stream.write(`${latest}\n`);
      }
    },
    finish(keep = true) {
      if (!tty || !latest) return;
      if (keep) {
        draw(latest);
        stream.write('\n');
      } else if (shown) {
        stream.write('\r\x1b[K');
      }
      shown = latest = '';
    },
  };
}
