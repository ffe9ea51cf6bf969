/**
 * The route table's shape, shared by the data plane (gateway/) and the control plane (cutover/).
 */
import type { CanaryHash } from './canary.ts';

/** Where a prefix's traffic goes. */
export const ROUTE_MODES = ['legacy', 'shadow', 'canary', 'service'] as const;
export type RouteMode = (typeof ROUTE_MODES)[number];

export interface Route {
  /** Normalised, lowercase path prefix without a trailing slash, e.g. /api/invoices. */
  prefix: string;
  /** The service (strangler.yaml services[].name) that takes the prefix over. */
  service: string;
  mode: RouteMode;
  /** Canary share 0-100 of users sent to the service (only meaningful in canary mode). */
  weight: number;
  /**
   * The HTTP methods (uppercase) the mode applies to; any other method goes to legacy as if the
   * route were in mode legacy. null or absent: all methods. Reads move before writes with it.
   */
  methods?: readonly string[] | null;
  /** Writes to the prefix are held at the gateway (a switchover is under way); reads go on. */
  fenced?: boolean;
  /**
   * When the fence's lease runs out (ms since the epoch, this host's clock): past it the gateway
   * lifts the fence itself, so a command killed while holding writes cannot hold them forever.
   */
  fenceUntil?: number;
  /**
   * The hash a canary buckets its users by (canary.ts). A canary keeps the hash it began with for as
   * long as it stays a canary of the same service; `fnv1a` marks one begun before the toolkit moved
   * to xxh32 (its control row's canary_hash is null). The control database names it on every
   * canary, and so do the snapshots it is saved to; absent from a table built in code, it is
   * DEFAULT_CANARY_HASH, and from an older snapshot, fnv1a (route-state.ts snapshotTable).
   */
  canaryHash?: CanaryHash;
}

/** The HTTP methods a route may be scoped to (`--methods`). */
export const HTTP_METHODS = ['GET', 'HEAD', 'OPTIONS', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;
/** Methods that change nothing: a scope of only these sends no write to the service. */
export const SAFE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS']);

/** Pure: true when a method scope holds only safe methods (null: all methods, so writes too). */
export function readsOnly(methods: readonly string[] | null | undefined): boolean {
  return !!methods && methods.length > 0 && methods.every((m) => SAFE_METHODS.has(m));
}

/** Pure: whether a route's mode applies to a request's method (its scope holds it, or it has none). */
export function inScope(route: Pick<Route, 'methods'>, method: string): boolean {
  return !route.methods || route.methods.includes(method);
}

/** One immutable, versioned route table. A gateway swaps whole tables, never edits one. */
export interface RouteTable {
  version: number;
  routes: readonly Route[];
}

/**
 * Pure: the table with every fence whose lease ran out by `now` lifted (the last committed route
 * stands), or the same table when none did.
 */
export function liftLapsedFences(table: RouteTable, now: number): RouteTable {
  if (!table.routes.some((r) => r.fenced && r.fenceUntil !== undefined && r.fenceUntil <= now)) return table;
  return { version: table.version, routes: table.routes.map((r) => (r.fenced && r.fenceUntil !== undefined && r.fenceUntil <= now ? Object.freeze({ ...r, fenced: false, fenceUntil: undefined }) : r)) };
}

/** What the request path reads: the current table, and whether it came from a stale snapshot. */
export interface RouteSource {
  current(): RouteTable;
  /** True when the table was loaded from the on-disk snapshot because the control DB was unreachable. */
  readonly degraded: boolean;
}

/** A RouteSource that never changes (tests, benches, and a gateway run without a control plane). */
export function staticRoutes(routes: Route[], version = 1): RouteSource {
  const table: RouteTable = Object.freeze({ version, routes: Object.freeze([...routes]) });
  return { current: () => table, degraded: false };
}
