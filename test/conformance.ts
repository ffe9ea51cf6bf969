import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, it } from 'vitest';
import type { ResolvedConfig } from '../core/config/load.ts';
import { startGateway } from '../gateway/start.ts';
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

/**
 * A data plane the suite runs against: the Node engine here; another engine (HAProxy) adds its
 * own entry to DATA_PLANES and every row runs against it too.
 */
export interface DataPlane {
  name: string;
  start(upstream: ConformanceUpstream, settings: PlaneSettings): Promise<RunningPlane>;
}

const sum = (text: string, metric: string) =>
  text
    .split('\n')
    .filter((l) => l.startsWith(metric))
    .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);

export const nodeDataPlane: DataPlane = {
  name: 'node',
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

/** Every data plane the gateway has. */
export const DATA_PLANES: DataPlane[] = [nodeDataPlane];

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
        it.skipIf(Boolean(r.skip))(r.name, async () => {
          const direct = r.throughOnly ? undefined : await r.exchange(ctx.upstream, ctx);
          const through = await r.exchange(ctx.plane, ctx);
          await r.check(through, direct, ctx);
        });
      }
    });
  }
}
