import { SignJWT } from 'jose';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResolvedConfig } from '../core/config/load.ts';
import { startGateway, type RunningGateway } from '../gateway/start.ts';
import { HEALTH_CHECK_USER_AGENT } from '../gateway/upstreams.ts';
import { migrateControl } from '../migrations/control/index.ts';
import { PostgresCluster } from '../stack/postgres-cluster.ts';
import { RedisServer } from '../stack/redis-server.ts';
import { waitFor } from '../stack/ports.ts';
import { hasStackTrace, runCli, spawnCli, writeConfig } from '../test/cli.ts';
import { createTestDatabase, dropTestDatabase, gatewayTestEnv } from '../test/harness.ts';
import { openCutover } from './executor.ts';

/**
 * Issue 19, control-plane faults, with the real `strangler` command (a process of its own), a
 * real gateway, and the control database on a PostgreSQL server of its own (to refuse
 * connections on, and to restart) and Redis of its own (to freeze). The analytics prefix is put in the phase each test starts
 * from; no sync runs, so a switch waits in its drain (writes held) until its budget runs out:
 * the window in which these faults strike.
 */
const PREFIX = '/api/analytics';
const CONTROL_DB = 'strangler_control';
/** The fence's lease: far shorter than the drain the CLI waits in, so only the lease can lift a fence its owner left. */
const LEASE_MS = 3_000;

let cluster: PostgresCluster;
let redisServer: RedisServer;
let env: Awaited<ReturnType<typeof gatewayTestEnv>>;
let config: ResolvedConfig;
let configFile: string;
let gateway: RunningGateway;
let ctl: Awaited<ReturnType<typeof openCutover>>;
const databases: string[] = [];

const token = () => new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('u1').setIssuer('legacy').setExpirationTime('1h').sign(new TextEncoder().encode(config.legacy.jwtSecret));

/** One write through the gateway: its status (a fenced prefix holds it, then 503). */
async function write(): Promise<number> {
  const res = await fetch(`${gateway.url}${PREFIX}/reports`, { method: 'POST', headers: { authorization: `Bearer ${await token()}`, 'content-type': 'application/json' }, body: '{}', signal: AbortSignal.timeout(10_000) });
  await res.arrayBuffer();
  return res.status;
}

async function control<T>(fn: (c: pg.Client) => Promise<T>, database = CONTROL_DB): Promise<T> {
  const c = new pg.Client({ connectionString: cluster.url(database) });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** Puts the prefix in a phase (plain SQL, as an earlier run would have left it), tells the gateway and waits for it. */
async function startFrom(phase: string, mode: string, weight = 0): Promise<void> {
  const s = `"${config.control.schema}"`;
  const version = await control(async (c) => {
    await c.query(`DELETE FROM ${s}.prefix_locks`);
    const { rows } = await c.query(`UPDATE ${s}.route_version SET version = version + 1 RETURNING version::int AS v`);
    await c.query(
      `INSERT INTO ${s}.routes (prefix, service, mode, weight, fenced, version) VALUES ($1, 'analytics', $2, $3, false, $4)
       ON CONFLICT (prefix) DO UPDATE SET mode = excluded.mode, weight = excluded.weight, fenced = false, version = excluded.version`,
      [PREFIX, mode, weight, rows[0].v],
    );
    await c.query(`INSERT INTO ${s}.service_state (service, prefix, phase) VALUES ('analytics', $1, $2) ON CONFLICT (service) DO UPDATE SET phase = excluded.phase, progress = null`, [PREFIX, phase]);
    return rows[0].v as number;
  });
  await gateway.routes.refresh();
  await waitFor(`the gateway to apply v${version}`, async () => gateway.routes.current().version >= version, 10_000, 20);
}

const phase = async () => control(async (c) => (await c.query(`SELECT phase FROM "${config.control.schema}".service_state WHERE service = 'analytics'`)).rows[0]?.phase as string);
const fencedInDb = async () => control(async (c) => (await c.query(`SELECT fenced FROM "${config.control.schema}".routes WHERE prefix = $1`, [PREFIX])).rows[0]?.fenced === true).catch(() => false);
const routeAtGateway = () => gateway.routes.current().routes.find((r) => r.prefix === PREFIX);

/** The control database stops taking connections and loses the ones it had (as an operator or a failover does it). */
async function refuseConnections(): Promise<void> {
  await control(async (c) => {
    await c.query(`ALTER DATABASE ${CONTROL_DB} ALLOW_CONNECTIONS false`);
    await c.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, [CONTROL_DB]);
  }, 'postgres');
}
const allowConnections = () => control((c) => c.query(`ALTER DATABASE ${CONTROL_DB} ALLOW_CONNECTIONS true`), 'postgres');

/** While the CLI runs its checks (it has planned its change), the service's health answer waits for `meanwhile`. */
function whilePlanned(meanwhile: () => Promise<unknown>): void {
  let done: Promise<unknown> | undefined;
  env.upstreams.analytics.override.set('/health', (req) => {
    if (req.headers['user-agent'] === HEALTH_CHECK_USER_AGENT) return { status: 200, body: { status: 'ok' } };
    done ??= meanwhile();
    return { status: 200, body: { status: 'ok' }, until: done };
  });
}

beforeAll(async () => {
  cluster = await PostgresCluster.start();
  redisServer = await RedisServer.start();
  await cluster.createDatabase(CONTROL_DB);
  env = await gatewayTestEnv('control_faults', ['analytics']);
  databases.push(await createTestDatabase('control_faults_legacy'), await createTestDatabase('control_faults_analytics'));
  config = {
    ...env.config,
    redis: { ...env.config.redis, url: redisServer.url },
    legacy: { ...env.config.legacy, databaseUrl: databases[0] },
    control: { ...env.config.control, databaseUrl: cluster.url(CONTROL_DB), fenceLeaseMs: LEASE_MS },
    // The CLI's drain budget: long enough that a switch is still holding writes when the fault strikes.
    gateway: { ...env.config.gateway, fenceHoldMs: 8_000 },
    services: env.config.services.map((s) => (s.name === 'analytics' ? { ...s, databaseUrl: databases[1], dependsOn: [] } : s)),
  };
  await migrateControl(config.control.databaseUrl, config.control.schema);
  configFile = writeConfig(env.dir, config);
  // The gateway holds a write 1 s, then answers 503 (Retry-After).
  gateway = await startGateway({ ...config, gateway: { ...config.gateway, fenceHoldMs: 1_000 } }, { port: 0, instanceId: 'faults-a' });
  ctl = await openCutover(config, 'test-operator');
}, 120_000);

afterAll(async () => {
  await allowConnections().catch(() => undefined);
  await gateway?.stop();
  await ctl?.close();
  for (const d of databases) await dropTestDatabase(d).catch(() => undefined);
  await env?.cleanup();
  await cluster?.destroy();
  redisServer?.resume();
  await redisServer?.destroy();
});

describe('control-plane faults (issue 19)', () => {
  it('refuses a cutover planned before a rollback that committed meanwhile (the rollback wins; exit 2 naming it)', async () => {
    await startFrom('syncing', 'legacy');
    whilePlanned(() => ctl.cutover.rollback(PREFIX, 'test: rollback while a cutover is under way'));
    const stale = await runCli(configFile, ['cutover', PREFIX, '--shadow', '--force', '--reason', 'planned before the rollback'], { env: { STRANGLER_ACTOR: 'stale-operator' } });
    env.upstreams.analytics.override.delete('/health');
    expect(stale.code, stale.stderr).toBe(2);
    expect(stale.stderr).toMatch(/the route of \/api\/analytics changed since this shadow was planned: v\d+ rolled-back by test-operator at \S+ \(rollback\); nothing changed; run it again/);
    expect(hasStackTrace(stale.stderr)).toBe(false);
    expect(await phase()).toBe('rolled-back');
    await waitFor('the gateway to follow the rollback', async () => routeAtGateway()?.mode === 'legacy', 5_000, 20);
    // The refusal is recorded under the actor that tried.
    expect((await ctl.cutover.store.history(PREFIX, 1))[0]).toMatchObject({ actor: 'stale-operator', command: 'shadow', outcome: 'refused' });
  });

  it('fails a cutover whose control database stops accepting connections after planning: one line, no stack trace, nothing changed', async () => {
    await startFrom('syncing', 'legacy');
    whilePlanned(refuseConnections);
    let r;
    try {
      r = await runCli(configFile, ['cutover', PREFIX, '--shadow', '--force', '--reason', 'control database goes away']);
    } finally {
      env.upstreams.analytics.override.delete('/health');
      await allowConnections();
    }
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
    expect(r.stderr).toMatch(/error \[NOT_READY\]: (the control database "strangler_control" is not accepting connections|PostgreSQL at \S+ is unavailable)/);
    expect(await phase()).toBe('syncing');
    expect(await write()).toBe(200);
  });

  it('fails a rollback against a control database that refuses connections in one line, and applies it once it accepts them again', async () => {
    await startFrom('canary', 'canary', 20);
    await refuseConnections();
    let refused;
    try {
      refused = await runCli(configFile, ['rollback', PREFIX, '--reason', 'control database refuses']);
    } finally {
      await allowConnections();
    }
    expect(refused.code, refused.stderr).toBe(1);
    expect(refused.stderr.trim().split('\n'), refused.stderr).toHaveLength(1);
    expect(refused.stderr).toMatch(/the control database "strangler_control" is not accepting connections .*retry when it accepts them again/);
    const again = await runCli(configFile, ['rollback', PREFIX, '--reason', 'control database is back']);
    expect(again.code, again.stderr).toBe(0);
    expect(await phase()).toBe('rolled-back');
  });

  it('lets writes flow again after the lease when the CLI is SIGKILLed while it holds them for a switch', async () => {
    await startFrom('canary', 'canary', 20);
    const cli = spawnCli(configFile, ['cutover', PREFIX, '--full', '--force', '--reason', 'killed mid-switch']);
    await waitFor('the switch to fence the prefix', fencedInDb, 30_000, 20);
    await waitFor('the gateway to hold writes', async () => routeAtGateway()?.fenced === true, 5_000, 20);
    cli.child.kill('SIGKILL');
    expect((await cli.result).signal).toBe('SIGKILL');
    // Well before control.fenceLeaseMs' default (30 s): only the test's 3 s lease lifts it in time.
    await waitFor('writes to flow again', async () => (await write()) === 200, 20_000, 100);
    // The last committed route stands: the switch never committed.
    expect(routeAtGateway()).toMatchObject({ mode: 'canary', weight: 20, fenced: false });
    expect(await phase()).toBe('canary');
  });

  it('applies a rollback while Redis is frozen, the gateway following it from the control database, and exits 3: applied, not confirmed', async () => {
    await startFrom('canary', 'canary', 20);
    redisServer.pause();
    let r;
    try {
      r = await runCli(configFile, ['rollback', PREFIX, '--reason', 'Redis is frozen']);
      expect(r.code, `${r.stdout}${r.stderr}`).toBe(3);
      expect(r.stdout).toMatch(/applied \(route v\d+\), NOT CONFIRMED by the gateways: /);
      expect(await phase()).toBe('rolled-back');
      // No notification can arrive through a frozen Redis: the gateway's poll of the control database brings it.
      await waitFor('the gateway to follow the rollback without Redis', async () => routeAtGateway()?.mode === 'legacy', 15_000, 50);
    } finally {
      redisServer.resume();
    }
    expect(await write()).toBe(200);
  });

  it('survives a restart of the control database during a switch: one line, no stack trace, writes flow again, the route is whole', async () => {
    await startFrom('canary', 'canary', 20);
    const cli = spawnCli(configFile, ['cutover', PREFIX, '--full', '--force', '--reason', 'control database restarts mid-switch']);
    await waitFor('the switch to fence the prefix', fencedInDb, 30_000, 20);
    await cluster.restart();
    const r = await cli.result;
    expect(hasStackTrace(r.stderr), r.stderr).toBe(false);
    // Refused (its drain found no sync) or failed on the restart: either way nothing was switched.
    expect([1, 2], r.stderr).toContain(r.code);
    expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
    // Well before control.fenceLeaseMs' default (30 s): only the test's 3 s lease lifts it in time.
    await waitFor('writes to flow again', async () => (await write()) === 200, 20_000, 100);
    await waitFor('the gateway to reach the control database again', async () => (await gateway.routes.refresh(), gateway.routes.storeReachable), 30_000, 200);
    expect(routeAtGateway()).toMatchObject({ mode: 'canary', weight: 20, fenced: false });
    expect(await phase()).toBe('canary');
  });
});
