import { canaryBucket, onServiceSide } from './canary.ts';
import { matchesPrefix } from './path-normalize.ts';
import { inScope, SAFE_METHODS, type Route, type RouteTable } from './route-types.ts';

/** The route whose prefix is the longest match of the normalised path, or null (→ legacy). */
export function matchRoute(table: RouteTable, matchPath: string): Route | null {
  let best: Route | null = null;
  for (const route of table.routes) {
    if ((!best || route.prefix.length > best.prefix.length) && matchesPrefix(matchPath, route.prefix)) best = route;
  }
  return best;
}

export type Target = 'legacy' | 'service';

export interface Choice {
  target: Target;
  /** Also mirror the request to the service and compare (shadow mode, safe methods). */
  shadow: boolean;
  /** May be served by legacy if the service cannot be reached. */
  fallback: boolean;
  why: 'unrouted' | 'legacy' | 'shadow' | 'canary-legacy' | 'canary-service' | 'service' | 'no-instance';
}

/** GET, HEAD, OPTIONS, or a request with an Idempotency-Key: safe to send again to legacy. */
export function safeToRetry(method: string, idempotencyKey: string | undefined): boolean {
  return SAFE_METHODS.has(method) || (typeof idempotencyKey === 'string' && idempotencyKey.length > 0);
}

/**
 * Pure: where a request goes. `stickyKey` is the JWT subject, else the canary cookie.
 * While no instance of the service is available (all unhealthy or ejected), the canary's users
 * go to legacy (`no-instance`: the service failed them); switched ("service") traffic that is safe to retry falls back per request, the rest
 * fails fast at the gateway. A method outside the route's scope (`methods`) goes to legacy as if
 * the route were in mode legacy, unshadowed: a reads-only canary sends no write to the service.
 */
export function chooseTarget(route: Route | null, request: { method: string; stickyKey: string | null; noInstance: boolean; retrySafe: boolean }): Choice {
  if (!route) return { target: 'legacy', shadow: false, fallback: false, why: 'unrouted' };
  if (!inScope(route, request.method)) return { target: 'legacy', shadow: false, fallback: false, why: 'legacy' };
  switch (route.mode) {
    case 'legacy':
      return { target: 'legacy', shadow: false, fallback: false, why: 'legacy' };
    case 'shadow':
      return { target: 'legacy', shadow: request.method === 'GET' || request.method === 'HEAD', fallback: false, why: 'shadow' };
    case 'canary': {
      const service = request.stickyKey !== null && onServiceSide(canaryBucket(request.stickyKey, route.service, route.canaryHash), route.weight);
      // Only a user the canary gives the service is one the service failed (counted in its analysis).
      if (service && request.noInstance) return { target: 'legacy', shadow: false, fallback: false, why: 'no-instance' };
      return service
        ? { target: 'service', shadow: false, fallback: request.retrySafe, why: 'canary-service' }
        : { target: 'legacy', shadow: false, fallback: false, why: 'canary-legacy' };
    }
    case 'service':
      return { target: 'service', shadow: false, fallback: request.retrySafe, why: 'service' };
  }
}
