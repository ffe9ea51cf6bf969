import { lookup } from 'node:dns/promises';
import type { Logger } from '../../core/logger.ts';
import type { ServiceInstance, ServiceRegistry } from '../../core/registry/registry.ts';
import { hostFilter } from '../discovery.ts';
import { REGISTRY_SLOT_PREFIX, REGISTRY_SLOTS, serviceBackend, strictServiceBackend } from './render-config.ts';
import { runtimeCommand } from './runtime-api.ts';

/**
 * Pure: which instance each server slot holds, keeping every instance that stays in the slot it
 * had (its connections and health-check state stay with it); new ones take free slots; slots of
 * instances gone are emptied. null: an empty slot (maint).
 */
export function assignSlots(previous: ReadonlyArray<string | null>, instanceIds: readonly string[], slots = REGISTRY_SLOTS): Array<string | null> {
  const wanted = new Set(instanceIds);
  const next = Array.from({ length: slots }, (_, i) => (previous[i] && wanted.has(previous[i]!) ? previous[i]! : null));
  const placed = new Set(next.filter(Boolean));
  for (const id of instanceIds) {
    if (placed.has(id)) continue;
    const free = next.indexOf(null);
    if (free < 0) break;
    next[free] = id;
    placed.add(id);
  }
  return next;
}

/**
 * Keeps the server slots of `discovery: registry` services in step with the registry, through the
 * Runtime API (set server addr / state): no reload. SECURITY: instances outside
 * registry.allowedHosts are never routed to (discovery.ts hostFilter), as on the Node engine.
 */
export function createRegistrySlots(o: { socket: string; registry: ServiceRegistry; services: string[]; allowedHosts: string[]; logger: Logger }) {
  const allowed = hostFilter(o.allowedHosts);
  const slots = new Map<string, Array<string | null>>(o.services.map((s) => [s, []]));
  const addresses = new Map<string, string>();

  async function apply(service: string, instances: ServiceInstance[]): Promise<void> {
    const usable = instances.filter((i) => allowed(i.url));
    if (usable.length > REGISTRY_SLOTS) o.logger.warn({ service, instances: usable.length, slots: REGISTRY_SLOTS }, 'more registered instances than HAProxy server slots; the rest are not routed to');
    const previous = slots.get(service) ?? [];
    const next = assignSlots(previous, usable.map((i) => i.id));
    for (let n = 0; n < next.length; n++) {
      const id = next[n];
      const server = `${REGISTRY_SLOT_PREFIX}${n + 1}`;
      const instance = usable.find((i) => i.id === id);
      const address = instance ? await addressOf(instance.url) : null;
      const key = `${service}/${server}`;
      if ((address ?? 'empty') === (addresses.get(key) ?? 'empty') && previous[n] === id) continue;
      for (const backend of [serviceBackend(service), strictServiceBackend(service)]) {
        const cmds = address ? [`set server ${backend}/${server} addr ${address.host} port ${address.port}`, `set server ${backend}/${server} state ready`] : [`set server ${backend}/${server} state maint`];
        for (const cmd of cmds) await runtimeCommand(o.socket, cmd);
      }
      if (address) addresses.set(key, address.host + ':' + address.port);
      else addresses.delete(key);
    }
    slots.set(service, next);
  }

  async function addressOf(url: string): Promise<{ host: string; port: number } | null> {
    const u = new URL(url);
    try {
      const { address } = await lookup(u.hostname.replace(/^\[|\]$/g, ''));
      return { host: address, port: Number(u.port || (u.protocol === 'https:' ? 443 : 80)) };
    } catch (err) {
      o.logger.warn({ err, url }, 'cannot resolve a registered instance');
      return null;
    }
  }

  return {
    /** One pass over every registry service; a registry that cannot be read leaves the slots as they are. */
    async refresh(): Promise<void> {
      for (const service of o.services) {
        try {
          await apply(service, await o.registry.list(service));
        } catch (err) {
          o.logger.warn({ err, service }, 'registry unreadable or HAProxy refused a server change; keeping the current slots');
        }
      }
    },
  };
}
