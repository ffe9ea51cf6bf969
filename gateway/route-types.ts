/**
 * The route table's shape, shared by the data plane (gateway/) and the control plane (cutover/).
 */

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
  /** Writes to the prefix are held at the gateway (a switchover is under way); reads go on. */
  fenced?: boolean;
  /**
   * When the fence's lease runs out (ms since the epoch, this host's clock): past it the gateway
   * lifts the fence itself, so a command killed while holding writes cannot hold them forever.
   */
  fenceUntil?: number;
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
