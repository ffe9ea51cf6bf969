import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import autocannon from 'autocannon';
import { aptInstall } from './apt.ts';

export interface LoadResult {
  name: string;
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  non2xx: number;
  /** CPU time (user + system) the target's processes spent per request, in µs; absent where it cannot be read. */
  cpuUs?: number;
}

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/**
 * CPU seconds (user + system) used so far by a process and its running descendants (nginx's
 * workers, the gateway's cluster workers), read from /proc; null where there is no /proc.
 * Unlike req/s and latency, CPU per request hardly moves with what the neighbours are doing.
 */
export function treeCpuSeconds(root: number): number | null {
  if (!existsSync(`/proc/${root}/stat`)) return null;
  const procs = new Map<number, { ppid: number; ticks: number }>();
  for (const dir of readdirSync('/proc')) {
    if (!/^\d+$/.test(dir)) continue;
    try {
      const text = readFileSync(`/proc/${dir}/stat`, 'utf8');
      // Fields after the command name (which may hold spaces): state ppid ... utime(14) stime(15).
      const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
      procs.set(Number(dir), { ppid: Number(rest[1]), ticks: Number(rest[11]) + Number(rest[12]) });
    } catch {
      // the process ended while we looked
    }
  }
  let ticks = 0;
  const pending = [root];
  while (pending.length) {
    const pid = pending.pop()!;
    ticks += procs.get(pid)?.ticks ?? 0;
    for (const [child, p] of procs) if (p.ppid === pid) pending.push(child);
  }
  return ticks / CLK_TCK;
}

const findWrk = () => ['/usr/bin/wrk', '/usr/local/bin/wrk'].find((p) => existsSync(p));
let WRK = findWrk();

/** wrk (C, as in the gateway issue's reference figures): installed with apt when missing, as root, unless BENCH_NO_INSTALL=1. */
export function ensureWrk(say: (line: string) => void): void {
  if (WRK) return;
  if (aptInstall(['wrk'], 'the load', say)) WRK = findWrk();
  if (!WRK) say('wrk is not installed: autocannon generates the load');
}

/** Which load generator the figures come from. */
export const loadGenerator = () => (WRK ? 'wrk -t1 -c32' : 'autocannon -c32 (wrk not installed)');

function ms(text: string): number {
  const m = /([\d.]+)(us|ms|s)/.exec(text);
  if (!m) return Number.NaN;
  const v = Number(m[1]);
  return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v;
}

async function wrk(url: string, seconds: number, connections: number, headers: Record<string, string> = {}): Promise<Omit<LoadResult, 'name'> & { requests: number }> {
  const args = ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', ...Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]), url];
  const { stdout } = await promisify(execFile)(WRK!, args, { timeout: (seconds + 30) * 1000 });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1] ?? 0);
  const requests = Number(/(\d+) requests in/.exec(stdout)?.[1] ?? 0);
  const p50 = ms(/\n\s+50%\s+(\S+)/.exec(stdout)?.[1] ?? '');
  const p99 = ms(/\n\s+99%\s+(\S+)/.exec(stdout)?.[1] ?? '');
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(stdout)?.[1] ?? 0);
  const errs = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(stdout);
  const errors = errs ? errs.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
  return { rps: Math.round(rps), p50: Math.round(p50 * 100) / 100, p99: Math.round(p99 * 100) / 100, errors, non2xx, requests };
}

/** One closed-loop load run: a short warm-up, then the measured run. */
export async function measure(name: string, url: string, options: { connections?: number; seconds?: number; headers?: Record<string, string>; warmup?: boolean; pid?: number } = {}): Promise<LoadResult> {
  const seconds = options.seconds ?? 8;
  const connections = options.connections ?? 32;
  const warmup = options.warmup ?? true;
  if (WRK) {
    if (warmup) await wrk(url, 2, connections, options.headers);
    const before = options.pid ? treeCpuSeconds(options.pid) : null;
    const { requests, ...r } = await wrk(url, seconds, connections, options.headers);
    const after = options.pid ? treeCpuSeconds(options.pid) : null;
    if (r.non2xx > 0) await explain(name, url, options.headers, `${r.non2xx} non-2xx`);
    const cpuUs = before !== null && after !== null && requests > 0 ? Math.round(((after - before) * 1e6) / requests) : undefined;
    return { name, ...r, cpuUs };
  }
  const base = { url, connections, pipelining: 1, headers: options.headers };
  if (warmup) await autocannon({ ...base, duration: 2 });
  const r = await autocannon({ ...base, duration: seconds });
  if (r.non2xx > 0) await explain(name, url, options.headers, JSON.stringify(r.statusCodeStats));
  return { name, rps: Math.round(r.requests.average), p50: r.latency.p50, p99: r.latency.p99, errors: r.errors + r.timeouts, non2xx: r.non2xx };
}

async function explain(name: string, url: string, headers: Record<string, string> | undefined, what: string): Promise<void> {
  const sample = await fetch(url, { headers });
  process.stdout.write(`${name}: ${what}; e.g. ${sample.status} ${(await sample.text()).slice(0, 200)}\n`);
}

export function printTable(rows: LoadResult[], baselines: Record<string, LoadResult | undefined>): void {
  const cpu = rows.some((r) => r.cpuUs !== undefined);
  const head = ['target', 'req/s', 'p50 ms', 'p99 ms', 'errors', ...(cpu ? ['CPU µs/req'] : []), ...Object.keys(baselines).map((b) => `× ${b} req/s`), ...Object.keys(baselines).map((b) => `p99 ÷ ${b}`)];
  const lines = rows.map((r) => [
    r.name,
    String(r.rps),
    String(r.p50),
    String(r.p99),
    String(r.errors + r.non2xx),
    ...(cpu ? [r.cpuUs === undefined ? 'n/a' : String(r.cpuUs)] : []),
    ...Object.values(baselines).map((b) => (b ? (r.rps / b.rps).toFixed(2) : 'n/a')),
    ...Object.values(baselines).map((b) => (b ? (r.p99 / Math.max(b.p99, 0.01)).toFixed(2) : 'n/a')),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const fmt = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  process.stdout.write(`${fmt(head)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n${lines.map(fmt).join('\n')}\n`);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/**
 * Measures every target in `rounds` interleaved rounds (A B C, A B C, ...) and keeps each
 * target's median: on a shared machine the load of the neighbours drifts over a minute, and
 * interleaving spreads that drift over every target instead of charging it to one. `spread`
 * is the lowest and highest req/s a target had.
 */
export async function measureRounds(targets: Array<{ name: string; url: string; headers?: Record<string, string>; pid?: number }>, o: { rounds: number; seconds: number }): Promise<Array<LoadResult & { spread: [number, number]; runs: LoadResult[] }>> {
  for (const t of targets) await measure(t.name, t.url, { seconds: 2, headers: t.headers });
  const runs = new Map<string, LoadResult[]>(targets.map((t) => [t.name, []]));
  for (let round = 0; round < o.rounds; round++) {
    for (const t of targets) runs.get(t.name)!.push(await measure(t.name, t.url, { seconds: o.seconds, headers: t.headers, warmup: false, pid: t.pid }));
  }
  return targets.map((t) => {
    const r = runs.get(t.name)!;
    return {
      name: t.name,
      rps: Math.round(median(r.map((x) => x.rps))),
      p50: Math.round(median(r.map((x) => x.p50)) * 100) / 100,
      p99: Math.round(median(r.map((x) => x.p99)) * 100) / 100,
      errors: r.reduce((n, x) => n + x.errors, 0),
      non2xx: r.reduce((n, x) => n + x.non2xx, 0),
      cpuUs: r.every((x) => x.cpuUs !== undefined) ? median(r.map((x) => x.cpuUs!)) : undefined,
      spread: [Math.min(...r.map((x) => x.rps)), Math.max(...r.map((x) => x.rps))],
      runs: r,
    };
  });
}

/** The median over rounds of a target's figure (req/s unless said) divided by the baseline's in the same round. */
export function roundRatio(target: { runs: LoadResult[] }, baseline: { runs: LoadResult[] }, figure: 'rps' | 'p99' = 'rps'): number {
  return median(target.runs.map((r, i) => r[figure] / Math.max(baseline.runs[i][figure], 0.01)));
}
