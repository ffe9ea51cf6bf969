import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import pg from 'pg';
import { inject } from 'vitest';
import { loadConfig, type ResolvedConfig } from '../core/config/load.ts';
import { generateSecret } from '../core/config/secrets.ts';
import { quoteIdent } from '../stack/postgres-cluster.ts';

export const ROOT = resolve(import.meta.dirname, '..');

/** The shared private stack of this test run (started by test/global-setup.ts). */
export function sharedStack(): { pgBaseUrl: string; redisUrl: string } {
  return { pgBaseUrl: inject('pgBaseUrl'), redisUrl: inject('redisUrl') };
}

/**
 * Secrets for this test process, generated as the dev stack does: the toolkit has no default
 * secret, and the shipped strangler.yaml sets none.
 */
export const testSecrets = { legacyJwtSecret: generateSecret(), adminToken: generateSecret() };

/** The headers of a request to a gateway admin endpoint (/metrics) of a harness config. */
export const adminHeaders = { authorization: `Bearer ${testSecrets.adminToken}` };

export function uniqueName(label: string): string {
  return `t_${label.replace(/[^a-z0-9_]/g, '_')}_${randomBytes(4).toString('hex')}`;
}

/** Creates a fresh database on the shared cluster and returns its URL. */
export async function createTestDatabase(label: string): Promise<string> {
  const { pgBaseUrl } = sharedStack();
  const name = uniqueName(label);
  const client = new pg.Client({ connectionString: `${pgBaseUrl}/postgres` });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${quoteIdent(name)}`);
  } finally {
    await client.end();
  }
  return `${pgBaseUrl}/${name}`;
}

export async function dropTestDatabase(url: string): Promise<void> {
  const { pgBaseUrl } = sharedStack();
  const name = new URL(url).pathname.slice(1);
  const client = new pg.Client({ connectionString: `${pgBaseUrl}/postgres` });
  await client.connect();
  try {
    // Slots of the database block DROP DATABASE: end their walsenders, then drop them.
    await client.query(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, [name]);
    for (let i = 0; i < 20; i++) {
      const { rows } = await client.query(`SELECT slot_name, active FROM pg_replication_slots WHERE database = $1`, [name]);
      if (rows.length === 0) break;
      for (const r of rows) if (!r.active) await client.query(`SELECT pg_drop_replication_slot($1)`, [r.slot_name]).catch(() => undefined);
      await new Promise((ok) => setTimeout(ok, 50));
    }
    await client.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
  } finally {
    await client.end();
  }
}

/**
 * strangler.yaml pointed at the shared stack, with every database renamed to a fresh one
 * (created here) and its own Redis key prefix, so test files never see each other's state.
 */
export async function isolatedConfig(label: string): Promise<{ config: ResolvedConfig; cleanup: () => Promise<void> }> {
  const { pgBaseUrl, redisUrl } = sharedStack();
  const base = loadConfig(resolve(ROOT, 'strangler.yaml'), { postgresUrl: pgBaseUrl, redisUrl, logLevel: 'silent', ...testSecrets });
  const tag = uniqueName(label);
  const urls: string[] = [];
  const rename = async (url: string, suffix: string) => {
    const name = `${tag}_${suffix}`.slice(0, 63);
    const client = new pg.Client({ connectionString: `${pgBaseUrl}/postgres` });
    await client.connect();
    try {
      await client.query(`CREATE DATABASE ${quoteIdent(name)}`);
    } finally {
      await client.end();
    }
    void url;
    const out = `${pgBaseUrl}/${name}`;
    urls.push(out);
    return out;
  };
  const config: ResolvedConfig = {
    ...base,
    redis: { ...base.redis, url: redisUrl, keyPrefix: `${tag}:` },
    legacy: { ...base.legacy, databaseUrl: await rename(base.legacy.databaseUrl, 'legacy') },
    control: { ...base.control, databaseUrl: await rename(base.control.databaseUrl, 'control') },
    services: await Promise.all(base.services.map(async (s) => ({ ...s, databaseUrl: await rename(s.databaseUrl, s.name) }))),
  };
  return {
    config,
    cleanup: async () => {
      for (const url of urls) await dropTestDatabase(url).catch(() => undefined);
    },
  };
}

/** strangler.yaml pointed at the shared stack with a fresh, migrated legacy database. */
export async function legacyTestConfig(label: string): Promise<{ config: ResolvedConfig; cleanup: () => Promise<void> }> {
  const { pgBaseUrl, redisUrl } = sharedStack();
  const base = loadConfig(resolve(ROOT, 'strangler.yaml'), { postgresUrl: pgBaseUrl, redisUrl, logLevel: 'silent', ...testSecrets });
  const databaseUrl = await createTestDatabase(label);
  const { migrateLegacy } = await import('../examples/reference/monolith/migrate.ts');
  await migrateLegacy(databaseUrl);
  return {
    config: { ...base, redis: { ...base.redis, url: redisUrl, keyPrefix: `${uniqueName(label)}:` }, legacy: { ...base.legacy, databaseUrl } },
    cleanup: () => dropTestDatabase(databaseUrl),
  };
}

/** A tiny JSON client for integration tests: `call('POST', '/api/x', body, token)`. */
export function jsonClient(baseUrl: string) {
  return async function call(method: string, path: string, body?: unknown, token?: string, headers: Record<string, string> = {}) {
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json: any;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, text, json };
  };
}

/**
 * A gateway test environment: a migrated control database, echo upstreams for legacy and each
 * named service, and a config pointing at them (fresh Redis key prefix, fast polling, a
 * snapshot file of its own). `setRoute` changes a route as the control plane does.
 */
export async function gatewayTestEnv(label: string, serviceNames: string[] = ['auth', 'invoices']) {
  const { pgBaseUrl, redisUrl } = sharedStack();
  const { startEchoUpstream } = await import('./upstream.ts');
  const { migrateControl } = await import('../migrations/control/index.ts');
  const { mkdtempSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const base = loadConfig(resolve(ROOT, 'strangler.yaml'), { postgresUrl: pgBaseUrl, redisUrl, logLevel: 'silent', ...testSecrets });
  const controlUrl = await createTestDatabase(`${label}_control`);
  await migrateControl(controlUrl, base.control.schema);
  const legacy = await startEchoUpstream('legacy');
  const upstreams = Object.fromEntries(await Promise.all(serviceNames.map(async (n) => [n, await startEchoUpstream(n)] as const)));
  const dir = mkdtempSync(join(tmpdir(), `${label}-`));
  const config: ResolvedConfig = {
    ...base,
    redis: { ...base.redis, url: redisUrl, keyPrefix: `${uniqueName(label)}:` },
    legacy: { ...base.legacy, url: legacy.url },
    control: { ...base.control, databaseUrl: controlUrl },
    gateway: { ...base.gateway, snapshotFile: join(dir, 'routes.json'), pollIntervalMs: 200, heartbeatIntervalMs: 200, rateLimits: [{ prefix: '/', limit: 100_000, windowMs: 60_000 }] },
    // Echo upstreams do not register: every service is static here.
    services: base.services.map((s) => ({ ...s, discovery: 'static' as const, ...(upstreams[s.name] ? { url: upstreams[s.name].url } : {}) })),
  };
  return {
    config,
    legacy,
    upstreams,
    dir,
    async cleanup() {
      await legacy.close();
      for (const u of Object.values(upstreams)) await u.close();
      await dropTestDatabase(controlUrl);
    },
  };
}

/** A strangler.yaml for a resolved test config (databases as full URLs), for tests that run the CLI. */
export function configYaml(config: ResolvedConfig): Record<string, unknown> {
  const { databaseUrl: legacyDb, url: legacyUrl, ...legacy } = config.legacy;
  // Every control setting goes with it (a test's short fence lease reaches the CLI it runs).
  const { databaseUrl: controlDb, ...control } = config.control;
  return {
    postgres: config.postgres,
    redis: config.redis,
    legacy: { ...legacy, url: legacyUrl, database: legacyDb },
    control: { ...control, database: controlDb },
    gateway: config.gateway,
    sync: config.sync,
    registry: config.registry,
    logLevel: 'warn',
    services: config.services.map(({ databaseUrl, ...s }) => ({
      ...s,
      database: databaseUrl,
      tables: s.tables.map((t) => ({ source: t.source, target: t.target, columns: t.columns, exclude: t.exclude, replica: t.replica })),
    })),
  };
}

/**
 * A strangler.yaml for a gateway CLI process over a gatewayTestEnv: its Redis namespace and
 * control database, legacy and the `invoices` echo upstream, on `port`.
 */
export async function gatewayCliYaml(env: Awaited<ReturnType<typeof gatewayTestEnv>>, port: number, gateway: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  const { freePort } = await import('../stack/ports.ts');
  const { join } = await import('node:path');
  return {
    postgres: { url: sharedStack().pgBaseUrl },
    redis: { url: env.config.redis.url, keyPrefix: env.config.redis.keyPrefix },
    legacy: { port: await freePort(), url: env.legacy.url },
    control: { database: new URL(env.config.control.databaseUrl).pathname.slice(1) },
    gateway: { port, snapshotFile: join(env.dir, `snap-${port}.json`), ...gateway },
    logLevel: 'warn',
    services: [{ name: 'invoices', prefix: '/api/invoices', port: await freePort(), url: env.upstreams.invoices.url, database: 'svc_invoices', order: 1 }],
  };
}
