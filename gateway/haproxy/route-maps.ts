import { DEFAULT_CANARY_HASH } from '../canary.ts';
import type { RouteTable } from '../route-types.ts';

/**
 * Pure: the routes map's entries for a table, one per prefix: `<service> <mode> <weight>
 * <fence deadline in ms since the epoch, 0: none> <methods comma-separated, or *> <canary hash>`,
 * as the Lua (lua-script.ts parse_route) reads them. A fence carries its lease, so HAProxy lifts
 * it by itself at the deadline even when the agent that set it is gone.
 */
export function routeMapEntries(table: RouteTable): Array<[string, string]> {
  return table.routes.map((r) => {
    const fence = r.fenced ? (r.fenceUntil ?? Number.MAX_SAFE_INTEGER) : 0;
    const methods = r.methods && r.methods.length > 0 ? r.methods.join(',') : '*';
    return [r.prefix, `${r.service} ${r.mode} ${r.weight} ${fence} ${methods} ${r.canaryHash ?? DEFAULT_CANARY_HASH}`];
  });
}

/**
 * Pure: the map haproxy.cfg routes by without Lua, keyed by prefix + "/" (map_beg's longest match
 * is then a match on segment boundaries), valued `<decision>|<prefix>`: `legacy:<name>` (legacy
 * and shadow routes), `legacy` (routes to a service strangler.yaml does not know),
 * `service:<name>` (unscoped, unfenced service routes), `canary:<name>:<weight×100>` (unscoped,
 * unfenced canaries on xxh32: the cfg buckets users with HAProxy's own xxh32 converter), or `lua`
 * (fenced or method-scoped routes, and canaries on the older fnv1a hash: the Lua decides, from
 * routeMapEntries). The prefix keys the count of writes in flight the agent waits on before
 * acknowledging a fence.
 */
export function fastMapEntries(table: RouteTable, services: ReadonlySet<string>): Array<[string, string]> {
  return table.routes.map((r) => {
    const key = r.prefix === '/' ? '/' : `${r.prefix}/`;
    const scoped = r.fenced || (r.methods && r.methods.length > 0);
    const decision = !services.has(r.service)
      ? 'legacy'
      : scoped || (r.mode === 'canary' && r.canaryHash === 'fnv1a')
        ? 'lua'
        : r.mode === 'canary'
          ? `canary:${r.service}:${Math.round(r.weight * 100)}`
          : r.mode === 'service'
            ? `service:${r.service}`
            : `legacy:${r.service}`;
    return [key, `${decision}|${r.prefix}`];
  });
}
