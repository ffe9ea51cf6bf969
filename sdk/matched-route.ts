import type { Request } from 'express';

const matched = new WeakMap<Request, string>();

/**
 * Starts recording the route pattern a request matches, with the path its router is mounted on
 * (`/api/auth/login`, not `/login`), as express matches it. Read afterwards with matchedRoute:
 * once a handler passes an error on, express has unwound req.baseUrl, so reading
 * `req.baseUrl + req.route.path` when the answer ends gives the pattern without its mount path.
 */
export function recordMatchedRoute(req: Request): void {
  if (Object.getOwnPropertyDescriptor(req, 'route')?.set) return;
  let route = req.route;
  Object.defineProperty(req, 'route', {
    configurable: true,
    enumerable: true,
    get: () => route,
    set(value) {
      route = value;
      if (typeof value?.path === 'string') matched.set(req, `${req.baseUrl}${value.path}`);
    },
  });
}

/** The route pattern recorded for the request (recordMatchedRoute), or undefined when none matched. */
export function matchedRoute(req: Request): string | undefined {
  return matched.get(req);
}
