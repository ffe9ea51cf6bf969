import { execFileSync } from 'node:child_process';

/**
 * Installs a baseline tool's Debian packages for a bench (nginx, wrk, tesseract), only as root
 * and unless BENCH_NO_INSTALL=1; says so first. True when apt-get succeeded.
 */
export function aptInstall(packages: string[], purpose: string, say: (line: string) => void, timeoutMs = 180_000): boolean {
  if (process.getuid?.() !== 0 || process.env.BENCH_NO_INSTALL === '1') return false;
  try {
    say(`installing ${packages[0]} for ${purpose} (apt-get install -y ${packages.join(' ')})…`);
    execFileSync('apt-get', ['install', '-y', '--no-install-recommends', ...packages], { stdio: 'ignore', timeout: timeoutMs });
    return true;
  } catch {
    return false;
  }
}
