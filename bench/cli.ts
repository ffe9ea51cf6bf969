/**
 * CLI start-up (issue 23): `strangler --help` from the built package (dist/, what an install
 * runs) against bare `node -e 0` (the floor) and the source checkout (TypeScript through tsx),
 * each the median of BENCH_CLI_RUNS runs in this process tree. Target: ≤ 0.3 s for the build.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '..');
const RUNS = Number(process.env.BENCH_CLI_RUNS ?? 15);

/** Median and best of RUNS wall-clock runs: the best is what the code costs when the machine does not preempt it. */
function timed(cmd: string[]): { median: number; best: number } {
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const start = process.hrtime.bigint();
    const r = spawnSync(cmd[0], cmd.slice(1), { cwd: ROOT, stdio: 'ignore' });
    if (r.status !== 0) throw new Error(`${cmd.join(' ')} exited ${r.status}`);
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  times.sort((a, b) => a - b);
  return { median: times[Math.floor(times.length / 2)], best: times[0] };
}

// Always built anew: a dist/ left from older sources would measure code that is not there any more.
process.stdout.write('cli: building dist/ (npm run build)…\n');
execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'ignore' });
const rows: Array<[string, string[], string]> = [
  ['node -e 0 (floor)', [process.execPath, '-e', '0'], ''],
  ['strangler --help, built (dist/)', [process.execPath, 'dist/cli/main.js', '--help'], '≤ 300 ms'],
  ['strangler sync --help, built', [process.execPath, 'dist/cli/main.js', 'sync', '--help'], ''],
  ['strangler config check, built', [process.execPath, 'dist/cli/main.js', 'config', 'check', '-c', 'strangler.yaml'], ''],
  ['strangler --help, sources (tsx)', [process.execPath, 'bin/strangler.js', '--help'], ''],
];
process.stdout.write(`\nCLI start-up, ${RUNS} runs each, Node ${process.version}, this machine (load ${(await import('node:os')).loadavg()[0].toFixed(1)})\n\n`);
process.stdout.write(`${'measure'.padEnd(34)} median ms  best ms  median vs node -e 0  target\n`);
let floor = 0;
for (const [label, cmd, target] of rows) {
  const t = timed(cmd);
  floor ||= t.median;
  process.stdout.write(`${label.padEnd(34)} ${t.median.toFixed(0).padStart(9)}  ${t.best.toFixed(0).padStart(7)}  ${`${(t.median / floor).toFixed(2)}×`.padStart(19)}  ${target}\n`);
}
