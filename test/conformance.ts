import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, it } from 'vitest';
import type { ResolvedConfig } from '../core/config/load.ts';
import { startGateway } from '../gateway/start.ts';
import { startHaproxyEngine } from '../gateway/haproxy/agent.ts';
import { runtimeCommand } from '../gateway/haproxy/runtime-api.ts';
import { redisKeys } from '../gateway/redis-keys.ts';
import { Redis } from 'ioredis';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '../stack/ports.ts';
import { adminHeaders, gatewayTestEnv, testSecrets } from './harness.ts';
import { startConformanceUpstream, type ConformanceUpstream } from './conformance-upstream.ts';
import type { Endpoint } from './raw-http.ts';

/** The gateway settings a conformance suite runs a data plane with (the rest: strangler.yaml's defaults). */
export type PlaneSettings = Partial<Pick<ResolvedConfig['gateway'], 'bodyLimitBytes' | 'maxHeaderBytes' | 'headersTimeoutMs' | 'requestTimeoutMs' | 'keepAliveTimeoutMs' | 'trustedProxies' | 'rateLimits' | 'protectedPrefixes'>>;

/** A data plane running in front of one upstream (every path routed to it as legacy). */
export interface RunningPlane extends Endpoint {
  url: string;
  /** A token the plane accepts, for the protected prefixes (/api). */
  token(sub: string): Promise<string>;
  /** Requests the plane counted as upstream failures (5xx it made) and as client aborts. */
  counts(): Promise<{ upstreamErrors: number; clientAborts: number }>;
  stop(): Promise<void>;
}

/** One engine running from a whole configuration, serving once it has acknowledged its first route table. */
export interface RunningEngine {
  url: string;
  port: number;
  instanceId: string;
  stop(): Promise<void>;
}

/**
 * A data plane the suites run against: the Node engine and the HAProxy engine; each row of
 * gateway/conformance*.test.ts and gateway/engines.test.ts runs against every entry of DATA_PLANES.
 */
export interface DataPlane {
  name: 'node' | 'haproxy';
  /** The engine on a free port, from a whole configuration (its control database and Redis). */
  engine(config: ResolvedConfig, instanceId: string): Promise<RunningEngine>;
  start(upstream: ConformanceUpstream, settings: PlaneSettings): Promise<RunningPlane>;
}

const sum = (text: string, metric: string) =>
  text
    .split('\n')
    .filter((l) => l.startsWith(metric))
    .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);

export const nodeDataPlane: DataPlane = {
  name: 'node',
  async engine(config, instanceId) {
    const gw = await startGateway(config, { port: 0, instanceId });
    return { url: gw.url, port: gw.port, instanceId, stop: gw.stop };
  },
  async start(upstream, settings) {
    const env = await gatewayTestEnv('conformance', []);
    const config: ResolvedConfig = { ...env.config, legacy: { ...env.config.legacy, url: upstream.url }, gateway: { ...env.config.gateway, ...settings } };
    const gw = await startGateway(config, { port: 0, instanceId: `gw-conformance-${process.pid}` });
    return {
      url: gw.url,
      host: new URL(gw.url).hostname,
      port: gw.port,
      token: (sub) => new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setIssuer('legacy').setExpirationTime('1h').sign(new TextEncoder().encode(testSecrets.legacyJwtSecret)),
      async counts() {
        const text = await (await fetch(`${gw.url}/metrics`, { headers: adminHeaders })).text();
        return { upstreamErrors: sum(text, 'strangler_gateway_requests_total{prefix="unrouted",target="legacy",class="5xx"}'), clientAborts: sum(text, 'strangler_gateway_client_aborts_total') };
      },
      async stop() {
        await gw.stop();
        await env.cleanup();
      },
    };
  },
};

/** `show stat` CSV rows of one proxy (frontend or backend line), keyed by column name. */
async function haproxyStat(socket: string, proxy: string, server: string): Promise<Record<string, string>> {
  const [head, ...lines] = (await runtimeCommand(socket, 'show stat')).split('\n').filter(Boolean);
  const names = head.replace(/^# /, '').split(',');
  const line = lines.map((l) => l.split(',')).find((v) => v[0] === proxy && v[1] === server) ?? [];
  return Object.fromEntries(names.map((n, i) => [n, line[i] ?? '']));
}

/**
 * The HAProxy engine (gateway/haproxy/): a real HAProxy (gateway.haproxy.binary) on a free port
 * with its own Runtime API socket, driven by its agent from a real control database and Redis.
 */
async function startHaproxyForTest(config: ResolvedConfig, instanceId: string) {
  const runDir = mkdtempSync(join(tmpdir(), 'strangler-haproxy-'));
  const started = await startHaproxyEngine(config, { port: 0, instanceId, runDir });
  // Its files (haproxy.cfg holds test secrets) go with it.
  const engine = { ...started, stop: () => started.stop().then(() => rmSync(runDir, { recursive: true, force: true })) };
  // Serving once the first table is in HAProxy (acknowledged).
  const redis = new Redis(config.redis.url);
  try {
    const keys = redisKeys(config.redis.keyPrefix);
    await waitFor('HAProxy to acknowledge its first route table', async () => Number((await redis.hget(keys.gateway(engine.instanceId), 'version')) ?? -1) >= 0, 10_000, 20);
  } finally {
    redis.disconnect();
  }
  return engine;
}

export const haproxyDataPlane: DataPlane = {
  name: 'haproxy',
  async engine(config, instanceId) {
    const engine = await startHaproxyForTest(config, instanceId);
    return { url: engine.url, port: engine.port, instanceId, stop: engine.stop };
  },
  async start(upstream, settings) {
    const env = await gatewayTestEnv('conformance_hx', []);
    const config: ResolvedConfig = { ...env.config, legacy: { ...env.config.legacy, url: upstream.url }, gateway: { ...env.config.gateway, ...settings } };
    const engine = await startHaproxyForTest(config, `hx-conformance-${process.pid}`);
    return {
      url: engine.url,
      host: new URL(engine.url).hostname,
      port: engine.port,
      token: (sub) => new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setIssuer('legacy').setExpirationTime('1h').sign(new TextEncoder().encode(testSecrets.legacyJwtSecret)),
      async counts() {
        const legacy = await haproxyStat(engine.rendered.socket, 'legacy', 'BACKEND');
        return { upstreamErrors: Number(legacy.hrsp_5xx || 0), clientAborts: Number(legacy.cli_abrt || 0) };
      },
      async stop() {
        await engine.stop();
        await env.cleanup();
      },
    };
  },
};

/** Every data plane the gateway has. */
export const DATA_PLANES: DataPlane[] = [nodeDataPlane, haproxyDataPlane];

export interface RowContext {
  upstream: ConformanceUpstream;
  plane: RunningPlane;
}

/**
 * One behaviour. `exchange` is sent to the upstream directly and through the data plane (unless
 * `throughOnly`: a behaviour only a proxy has, like refusing a request), and `check` compares.
 */
export interface Row<T> {
  name: string;
  throughOnly?: boolean;
  skip?: string | false;
  /** Engines this row cannot hold on, each with the reason (the test is reported skipped, its title saying why). */
  notOn?: Partial<Record<string, string>>;
  exchange(to: Endpoint, ctx: RowContext): Promise<T>;
  check(through: T, direct: T | undefined, ctx: RowContext): void | Promise<void>;
}

/** Typed row constructor: a table holds rows of different observation types. */
export const row = <T>(r: Row<T>): Row<unknown> => r as Row<unknown>;

/** Runs every row against every data plane, each plane in front of its own reference upstream. */
export function conformanceSuite(title: string, settings: PlaneSettings, rows: Array<Row<unknown>>, planes: DataPlane[] = DATA_PLANES): void {
  for (const dataPlane of planes) {
    describe(`${title} (${dataPlane.name} data plane)`, () => {
      const ctx = {} as RowContext;
      beforeAll(async () => {
        ctx.upstream = await startConformanceUpstream();
        ctx.plane = await dataPlane.start(ctx.upstream, settings);
      });
      afterAll(async () => {
        await ctx.plane?.stop();
        await ctx.upstream?.close();
      });
      for (const r of rows) {
        const notHere = r.notOn?.[dataPlane.name];
        it.skipIf(Boolean(r.skip) || Boolean(notHere))(notHere ? `${r.name} [not on ${dataPlane.name}: ${notHere}]` : r.name, async () => {
          const direct = r.throughOnly ? undefined : await r.exchange(ctx.upstream, ctx);
          const through = await r.exchange(ctx.plane, ctx);
          await r.check(through, direct, ctx);
        });
      }
    });
  }
}
