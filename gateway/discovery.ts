import type { Logger } from '../core/logger.ts';
import type { ServiceRegistry } from '../core/registry/registry.ts';
import type { Cluster } from './upstreams.ts';

export interface Discovery {
  /** Resolves after the first listing (or its failure): instances found are checked and routable. */
  readonly ready: Promise<void>;
  refresh(service?: string): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Keeps the clusters of `discovery: registry` services in step with the registry: a full listing
 * every `refreshMs` (which also sees instances whose TTL lapsed) and one at once for a service
 * whose instances announce a change. While the registry cannot be read the last known members
 * stay (the active health checks still take a dead one out of rotation).
 */
export function startDiscovery(o: { registry: ServiceRegistry; clusters: Cluster[]; refreshMs: number; logger: Logger }): Discovery {
  const byName = new Map(o.clusters.map((c) => [c.name, c]));
  let failing = false;
  let stopped = false;

  async function refresh(service?: string): Promise<void> {
    const targets = service ? [byName.get(service)].filter((c): c is Cluster => !!c) : [...byName.values()];
    try {
      const checks: Promise<void>[] = [];
      for (const c of targets) {
        const instances = await o.registry.list(c.name);
        if (stopped) return;
        checks.push(c.setMembers(instances.map((i) => ({ id: i.id, url: i.url, source: 'registry' as const, version: i.version, zone: i.zone }))));
      }
      await Promise.all(checks);
      if (failing) o.logger.info('registry readable again');
      failing = false;
    } catch (err) {
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
