import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { AddressInfo } from 'node:net';
import type { ResolvedConfig } from '../core/config/load.ts';
import { createLogger, type Logger } from '../core/logger.ts';
import { startTracing } from '../core/tracing/tracing.ts';
import { createGatewayMetrics } from './metrics.ts';
import type { LiveRouteState } from './route-state.ts';
import { createGateway, gatewaySecrets, type Gateway } from './server.ts';
import { createRouteFollower } from './route-follower.ts';

export interface RunningGateway {
  url: string;
  port: number;
  instanceId: string;
  gateway: Gateway;
  routes: LiveRouteState;
  stop(): Promise<void>;
}

export interface StartGatewayOptions {
  /** 0 takes a free port; default: gateway.port. */
  port?: number;
  instanceId?: string;
  logger?: Logger;
  /** Share a listening port with sibling workers (node:cluster). */
  exclusive?: boolean;
}

/** A gateway process: the route state from the control DB (following Redis), and the data plane. */
export async function startGateway(config: ResolvedConfig, options: StartGatewayOptions = {}): Promise<RunningGateway> {
  gatewaySecrets(config); // refused before connecting to anything
  const logger = options.logger ?? createLogger('gateway', config.logLevel);
  const instanceId = options.instanceId ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const metrics = createGatewayMetrics();
  const follower = createRouteFollower(config, { instanceId, logger, onRedisUnavailable: (what) => metrics.redisUnavailable.inc({ what }) });
  const { keys, redis, redisHealth, routes } = follower;
  await follower.start();
  const tracing = await startTracing(config.tracing, config.tracing.serviceName, logger);
  const gateway = createGateway({ config, routes, redis, redisHealth, keys, logger, metrics, tracing });
  await gateway.discovery.ready;
  // Each gateway's view of the instances (health, ejections, in flight, recent errors), for `strangler services`.
  const publishView = () => {
    if (!redisHealth.ok) return void redisHealth.unavailable('view');
    const clusters = Object.fromEntries([...gateway.upstreams.values()].map((c) => [c.name, c.view()]));
    const ttl = Math.max(3 * config.gateway.heartbeatIntervalMs, 5_000);
    return redis.set(keys.gatewayUpstreams(instanceId), JSON.stringify({ gateway: instanceId, at: Date.now(), clusters }), 'PX', ttl).catch((err) => redisHealth.failed(err));
  };
  void publishView();
  const viewTimer = setInterval(() => void publishView(), config.gateway.heartbeatIntervalMs);
  viewTimer.unref();
  const port = options.port ?? config.gateway.port;
  await new Promise<void>((resolve, reject) => {
    gateway.server.once('error', reject);
    gateway.server.listen({ port, host: config.gateway.host, exclusive: options.exclusive ?? true }, () => resolve());
  });
  const actual = (gateway.server.address() as AddressInfo).port;
  logger.info({ port: actual, instanceId }, 'gateway listening');
  let stopping: Promise<void> | null = null;
  return {
    url: `http://${config.gateway.host}:${actual}`,
    port: actual,
    instanceId,
    gateway,
    routes,
    stop() {
      stopping ??= (async () => {
        clearInterval(viewTimer);
        await follower.withdraw();
        await gateway.close();
        await tracing?.shutdown().catch((err) => logger.warn({ err }, 'tracing: the last spans could not be exported'));
        await follower.close();
      })();
      return stopping;
    },
  };
}
