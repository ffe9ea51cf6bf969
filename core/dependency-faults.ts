import type { ResolvedConfig } from './config/load.ts';
import { databaseName } from './databases.ts';
import { DeadlineError } from './deadline.ts';
import { StranglerError } from './errors.ts';

/** Node's and the drivers' names for "the other side is not there or does not answer". */
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EPIPE', 'EAI_AGAIN']);
/** PostgreSQL states that mean the server is going away, starting, or refusing sessions. */
const PG_UNAVAILABLE = new Set(['57P01', '57P02', '57P03', '53300', '08000', '08001', '08003', '08006']);

type Fault = { code?: string; message?: string; address?: string; port?: number; name?: string };

function hostPort(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || (u.protocol.startsWith('redis') ? '6379' : '5432')}`;
  } catch {
    return url;
  }
}

/** Which configured database a name is, said the way the user knows it, and how to create it. */
function whichDatabase(name: string, config: ResolvedConfig | null): { what: string; fix: string } {
  if (config && databaseName(config.control.databaseUrl) === name) return { what: `the control database "${name}"`, fix: 'create it: strangler control init' };
  if (config && databaseName(config.legacy.databaseUrl) === name) return { what: `the monolith's database "${name}"`, fix: 'check legacy.database in strangler.yaml' };
  const service = config?.services.find((s) => databaseName(s.databaseUrl) === name);
  if (service) return { what: `the database "${name}" of ${service.name}`, fix: `create it: strangler sync start ${service.name} (creates it), or createdb ${name}` };
  return { what: `database "${name}"`, fix: 'create it, or fix the database name in strangler.yaml' };
}

/**
 * An expected infrastructure fault (a database missing, unreachable or refusing; Redis down or
 * hung) as one line saying what is wrong and what to do (NOT_READY, exit 1), or null for
 * anything else. Pure: reads only the error and the configuration.
 */
export function explainDependencyFault(err: unknown, config: ResolvedConfig | null): StranglerError | null {
  if (err instanceof StranglerError) return null;
  const e = (err ?? {}) as Fault;
  const message = String(e.message ?? '').split('\n')[0];
  const at = e.address && e.port ? `${e.address}:${e.port}` : null;
  const redisAt = config ? hostPort(config.redis.url) : null;
  const pgAt = config ? hostPort(config.postgres.url ?? config.control.databaseUrl) : null;
  const isRedis = (at !== null && redisAt !== null && (at === redisAt || at.endsWith(`:${redisAt.split(':')[1]}`))) || /max retries per request|Command timed out|Connection is closed|Stream isn't writeable|Redis/.test(message) || e.name === 'MaxRetriesPerRequestError';
  const fault = (text: string) => new StranglerError(text, 'NOT_READY', { cause: message });

  const missing = /^database "(.+)" does not exist$/.exec(message);
  if (e.code === '3D000' && missing) {
    const { what, fix } = whichDatabase(missing[1], config);
    return fault(`${what} does not exist; ${fix}`);
  }
  const refusing = /^database "(.+)" is not currently accepting connections$/.exec(message);
  if (refusing) {
    const { what } = whichDatabase(refusing[1], config);
    return fault(`${what} is not accepting connections (ALLOW_CONNECTIONS is off, or it is being dropped); nothing was changed by this command; retry when it accepts them again`);
  }
  if (err instanceof DeadlineError || /did not answer within/.test(message)) return fault(`${message}; a dependency that hangs counts as down: check it, then retry`);
  if (isRedis && (NETWORK_CODES.has(e.code ?? '') || /max retries|timed out|Connection is closed|Stream isn't writeable/.test(message))) {
    return fault(`Redis at ${redisAt ?? at ?? '?'} is unavailable (${message}); start it or fix redis.url / --redis-url, then retry`);
  }
  if (NETWORK_CODES.has(e.code ?? '')) {
    return fault(`cannot reach PostgreSQL at ${at ?? pgAt ?? '?'} (${message}); start it or fix postgres.url / --postgres-url, then retry`);
  }
  if (PG_UNAVAILABLE.has(e.code ?? '') || /Connection terminated|timeout exceeded when trying to connect|Query read timeout|terminating connection/.test(message)) {
    return fault(`PostgreSQL${pgAt ? ` at ${pgAt}` : ''} is unavailable (${message}); it may be restarting or overloaded; retry when it answers`);
  }
  return null;
}
