import type { RouteTable } from '../route-types.ts';

/**
 * Pure: the routes map's entries for a table, one per prefix: `<service> <mode> <weight>
 * <fence deadline in ms since the epoch, 0: none> <methods comma-separated, or *>`, as the Lua
 * (lua-script.ts parse_route) reads them. A fence carries its lease, so HAProxy lifts it by itself
 * at the deadline even when the agent that set it is gone.
 */
export function routeMapEntries(table: RouteTable): Array<[string, string]> {
  return table.routes.map((r) => {
    const fence = r.fenced ? (r.fenceUntil ?? Number.MAX_SAFE_INTEGER) : 0;
    const methods = r.methods && r.methods.length > 0 ? r.methods.join(',') : '*';
    return [r.prefix, `${r.service} ${r.mode} ${r.weight} ${fence} ${methods}`];
  });
}
