import pg from 'pg';
import { StranglerError } from './errors.ts';

/** The database a postgres:// URL names. */
export function databaseName(url: string): string {
  return decodeURIComponent(new URL(url).pathname.slice(1)) || 'postgres';
}

/** The same server's maintenance database (where CREATE DATABASE is run). */
function maintenanceUrl(url: string): string {
  const u = new URL(url);
  u.pathname = '/postgres';
  return u.toString();
}

function createdbCommand(url: string): string {
  const u = new URL(url);
  return `createdb -h ${u.hostname} -p ${u.port || '5432'}${u.username ? ` -U ${decodeURIComponent(u.username)}` : ''} ${databaseName(url)}`;
}

/**
 * Creates the database a URL names when it does not exist yet (a service's own database, the
 * control database). Returns whether it created it. When it cannot (no CREATEDB privilege, the
 * server refuses), the error says exactly what to run instead.
 */
export async function ensureDatabase(url: string, purpose: string): Promise<boolean> {
  const name = databaseName(url);
  const admin = new pg.Client({ connectionString: maintenanceUrl(url) });
  try {
    await admin.connect();
    if ((await admin.query(`SELECT 1 FROM pg_database WHERE datname = $1`, [name])).rowCount) return false;
    await admin.query(`CREATE DATABASE "${name.replace(/"/g, '""')}"`);
    return true;
  } catch (err) {
    // Two processes creating it at once: the other one did.
    if ((err as { code?: string }).code === '42P04') return false;
    throw new StranglerError(`${purpose} "${name}" does not exist and could not be created (${(err as Error).message}); create it, then retry: ${createdbCommand(url)}`, 'NOT_READY');
  } finally {
    await admin.end().catch(() => undefined);
  }
}

/** Whether an error is PostgreSQL's "database does not exist". */
export function isMissingDatabase(err: unknown): boolean {
  return (err as { code?: string })?.code === '3D000';
}
