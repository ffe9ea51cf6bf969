/**
 * CLI start-up (issue 23): `strangler --help` from the built package (dist/, what an install
 * runs) against bare `node -e 0` (the floor) and the source checkout (TypeScript through tsx),
 * each the median of BENCH_CLI_RUNS runs in this process tree. Target: ≤ 0.3 s for the build.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '..');
const RUNS = Number(process.env.BENCH_CLI_RUNS ?? 15);

function median(cmd: string[]): number {
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const start = process.hrtime.bigint();
    const r = spawnSync(cmd[0], cmd.slice(1), { cwd: ROOT, stdio: 'ignore' });
    if (r.status !== 0) throw new Error(`${cmd.join(' ')} exited ${r.status}`);
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  return times.sort((a, b) => a - b)[Math.floor(times.length / 2)];
}

if (!existsSync(resolve(ROOT, 'dist/cli/main.js'))) {
  process.stdout.write('cli: building dist/ (npm run build)…\n');
  execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'ignore' });
}
const floor = median([process.execPath, '-e', '0']);
const built = median([process.execPath, 'dist/cli/main.js', '--help']);
const sources = median([process.execPath, 'bin/strangler.js', '--help']);
process.stdout.write(`\nCLI start-up, median of ${RUNS} runs, Node ${process.version}, this machine\n\n`);
process.stdout.write('measure                                 ms    vs node -e 0   target\n');
process.stdout.write(`node -e 0 (floor)                  ${floor.toFixed(0).padStart(6)}\n`);
process.stdout.write(`strangler --help, built (dist/)    ${built.toFixed(0).padStart(6)}    ${(built / floor).toFixed(2)}×        ≤ 300 ms\n`);
process.stdout.write(`strangler --help, sources (tsx)    ${sources.toFixed(0).padStart(6)}    ${(sources / floor).toFixed(2)}×\n`);
