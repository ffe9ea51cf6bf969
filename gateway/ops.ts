import type { IncomingMessage, ServerResponse } from 'node:http';
import { errorBody } from '../core/errors.ts';
import type { DependencyHealth } from '../core/redis-health.ts';
import { ADMIN_PATHS } from './admin-auth.ts';
import type { GatewayMetrics } from './metrics.ts';
import type { RouteSource } from './route-types.ts';
import type { Cluster } from './upstreams.ts';

/** The gateway's own endpoints, answered before any route. */
export const OPS_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

export interface OpsDeps {
  routes: RouteSource & { loaded?: boolean; storeReachable?: boolean };
  redis: DependencyHealth;
  metrics: GatewayMetrics;
  upstreams: Map<string, Cluster>;
  /** Whether an Authorization header carries the gateway's admin token (admin-auth.ts). */
  isAdmin: (authorization: string | undefined) => boolean;
}

/**
 * Why the gateway is degraded now (empty: it is not). Degraded is still ready: it serves from what
 * it has (its route table, its own rate counts), and every gateway sharing the failed dependency
 * would otherwise leave the load balancer at once.
 */
export function degradedReasons(d: Pick<OpsDeps, 'routes' | 'redis'>): string[] {
  const reasons: string[] = [];
  if (d.routes.degraded) reasons.push('serving the route snapshot (control database unreachable)');
  else if (d.routes.storeReachable === false) reasons.push('control database unreachable: route changes are picked up once it answers');
  if (!d.redis.ok) reasons.push(`${d.redis.reason}: rate limits counted by this gateway alone; heartbeats, route figures and notifications wait for Redis`);
  return reasons;
}

/**
 * /healthz (the process answers), /readyz (it has a route table: 200, with `degraded` and the
 * reasons when a dependency is away; 503 without a table) and /metrics (Prometheus, behind the
 * admin token).
 */
export function createOps(d: OpsDeps) {
  return async function ops(path: string, req: IncomingMessage, res: ServerResponse, requestId: string): Promise<boolean> {
    // SECURITY: admin endpoints answer only to the admin token (gateway/admin-auth.ts).
    if (ADMIN_PATHS.has(path) && !d.isAdmin(req.headers.authorization)) {
      const body = JSON.stringify(errorBody('UNAUTHENTICATED', `${path} needs the gateway's admin token: Authorization: Bearer <gateway.adminToken>`));
      res.writeHead(401, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), 'x-request-id': requestId, 'www-authenticate': 'Bearer realm="strangler-admin"' }).end(body);
      return true;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json', 'x-request-id': requestId }).end('{"status":"ok"}');
      return true;
    }
    if (path === '/readyz') {
      const loaded = d.routes.loaded ?? true;
      const degraded = degradedReasons(d);
      const body = {
        ready: loaded,
        status: !loaded ? 'no route table' : degraded.length ? `degraded: ${degraded.join('; ')}` : 'ok',
        degraded,
        routeTable: loaded ? { version: d.routes.current().version, degraded: d.routes.degraded } : null,
        controlDatabase: d.routes.storeReachable === false ? 'unreachable' : 'ok',
        redis: d.redis.ok ? 'ready' : 'unavailable',
      };
      res.writeHead(loaded ? 200 : 503, { 'content-type': 'application/json', 'x-request-id': requestId }).end(JSON.stringify(body));
      return true;
    }
    if (path === '/metrics') {
      const { metrics } = d;
      if (d.routes.loaded ?? true) metrics.routeVersion.set(d.routes.current().version);
      metrics.instanceInFlight.reset();
      metrics.instanceAvailable.reset();
      for (const c of d.upstreams.values()) {
        const view = c.view();
        metrics.availableInstances.set({ service: c.name }, view.filter((v) => v.available).length);
        for (const v of view) {
          metrics.instanceInFlight.set({ service: c.name, instance: v.id }, v.inFlight);
          metrics.instanceAvailable.set({ service: c.name, instance: v.id }, v.available ? 1 : 0);
        }
      }
      metrics.degraded.set(degradedReasons(d).length ? 1 : 0);
      metrics.redisAvailable.set(d.redis.ok ? 1 : 0);
      res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(await metrics.registry.metrics());
      return true;
    }
    return false;
  };
}
