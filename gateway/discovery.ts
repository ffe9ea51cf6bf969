import { isIP } from 'node:net';
import proxyaddr from 'proxy-addr';
import type { Logger } from '../core/logger.ts';
import type { DependencyHealth } from '../core/redis-health.ts';
import type { ServiceRegistry } from '../core/registry/registry.ts';
import type { Cluster } from './upstreams.ts';

export interface Discovery {
  /** Resolves after the first listing (or its failure): instances found are checked and routable. */
  readonly ready: Promise<void>;
  refresh(service?: string): Promise<void>;
  stop(): Promise<void>;
}

export interface DiscoveryOptions {
  registry: ServiceRegistry;
  clusters: Cluster[];
  refreshMs: number;
  logger: Logger;
  allowedHosts?: string[];
  /** The registry's Redis: not read while unavailable. */
  health?: DependencyHealth & { lastOutage?: { to: number } | null };
  /**
   * After a Redis outage, how long instances missing from the registry are kept (the registry TTL):
   * their entries lapsed while Redis was away, and they register again with their next heartbeat.
   */
  outageGraceMs?: number;
}

/**
 * Keeps the clusters of `discovery: registry` services in step with the registry: a full listing
 * every `refreshMs` (which also sees instances whose TTL lapsed) and one at once for a service
 * whose instances announce a change. While the registry cannot be read the last known members
 * stay (the active health checks still take a dead one out of rotation), and for `outageGraceMs`
 * after Redis is back none is dropped for missing from it.
 */
export function startDiscovery(o: DiscoveryOptions): Discovery {
  const byName = new Map(o.clusters.map((c) => [c.name, c]));
  const allowed = hostFilter(o.allowedHosts ?? []);
  const refused = new Set<string>();
  let failing = false;
  let stopped = false;

  async function refresh(service?: string): Promise<void> {
    const targets = service ? [byName.get(service)].filter((c): c is Cluster => !!c) : [...byName.values()];
    if (o.health && !o.health.ok) return o.health.unavailable('registry');
    const lastOutage = o.health?.lastOutage;
    const keepMissing = !!lastOutage && Date.now() - lastOutage.to < (o.outageGraceMs ?? 0);
    try {
      const checks: Promise<void>[] = [];
      for (const c of targets) {
        const instances = (await o.registry.list(c.name)).filter((i) => {
          if (allowed(i.url)) return true;
          if (!refused.has(i.id)) o.logger.warn({ service: c.name, instance: i.id, url: i.url }, 'registered instance refused: its host is not in registry.allowedHosts');
          refused.add(i.id);
          return false;
        });
        if (stopped) return;
        checks.push(c.setMembers(instances.map((i) => ({ id: i.id, url: i.url, source: 'registry' as const, version: i.version, zone: i.zone })), { keepMissing }));
      }
      await Promise.all(checks);
      if (failing) o.logger.info('registry readable again');
      failing = false;
    } catch (err) {
      o.health?.failed(err);
      if (!failing) o.logger.warn({ err: (err as Error).message }, 'registry unreadable: keeping the last known instances');
      failing = true;
    }
  }

  if (byName.size === 0) return { ready: Promise.resolve(), refresh, stop: async () => undefined };
  const timer = setInterval(() => void refresh(), o.refreshMs);
  timer.unref();
  let unwatch: (() => Promise<void>) | null = null;
  const watching = o.registry
    .watch((change) => {
      if (byName.has(change.service)) void refresh(change.service);
    })
    .then((u) => {
      if (stopped) return void u();
      unwatch = u;
    })
    .catch((err) => o.logger.warn({ err: (err as Error).message }, 'registry changes not watched: relying on the periodic listing'));
  return {
    ready: Promise.race([refresh(), new Promise<void>((r) => setTimeout(r, 3_000).unref())]),
    refresh,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await watching;
      await unwatch?.();
    },
  };
}

/**
 * SECURITY: anyone who can write to Redis can register an instance, and the gateway would send
 * users' requests (with their identity headers) there. registry.allowedHosts bounds that: an
 * instance whose URL host is not a listed hostname, address or CIDR is never routed to.
 */
export function hostFilter(allowedHosts: string[]): (url: string) => boolean {
  if (allowedHosts.length === 0) return () => true;
  const names = new Set(allowedHosts.filter((h) => !isIP(h.split('/')[0])).map((h) => h.toLowerCase()));
  const cidrs = allowedHosts.filter((h) => isIP(h.split('/')[0]));
  const trusted = cidrs.length ? proxyaddr.compile(cidrs) : () => false;
  return (url) => {
    let host: string;
    try {
      host = new URL(url).hostname.replace(/^\[|\]$/g, '').toLowerCase();
    } catch {
      return false;
    }
    return isIP(host) ? trusted(host, 0) : names.has(host);
  };
}
