import type { Redis } from 'ioredis';
import type { ResolvedConfig } from '../core/config/load.ts';
import { createRedisRegistry } from '../core/registry/redis-registry.ts';
import type { ServiceInstance } from '../core/registry/registry.ts';
import type { RedisKeys } from './redis-keys.ts';
import type { EndpointView } from './upstreams.ts';

/** One gateway's published view of its upstreams. */
export interface GatewayView {
  gateway: string;
  at: number;
  clusters: Record<string, EndpointView[]>;
}

export interface InstanceRow {
  id: string;
  url: string;
  version: string | null;
  zone: string | null;
  /** live: registered and heartbeating; static: from strangler.yaml; gone: a gateway still has it, the registry does not. */
  registry: 'live' | 'static' | 'gone';
  /** Per gateway: healthy, unhealthy, unknown (not yet checked). */
  health: Record<string, EndpointView['health']>;
  /** Gateways that have it ejected, with the time left (ms). */
  ejected: Record<string, number>;
  ejections: number;
  /** The lowest share of a full one any gateway gives it, in % (below 100 while it warms up: slow start). */
  weightPercent: number;
  inFlight: number;
  /** Summed over gateways, the last minute. */
  recentRequests: number;
  recentFailures: number;
  /** recentFailures / recentRequests, in %, or null without requests. */
  errorRate: number | null;
}

export interface ServiceInstances {
  service: string;
  prefix: string | null;
  discovery: 'static' | 'registry';
  gateways: string[];
  instances: InstanceRow[];
  /** Instances every reporting gateway may send to now. */
  available: number;
}

/** Pure: merges the registry's entries and every gateway's view into one row per instance. */
export function mergeInstances(config: ResolvedConfig, registered: ServiceInstance[], views: GatewayView[]): ServiceInstances[] {
  const services = [{ name: 'legacy', prefix: null as string | null, discovery: 'static' as const }, ...config.services.map((s) => ({ name: s.name, prefix: s.prefix as string | null, discovery: s.discovery }))];
  return services.map((s) => {
    const rows = new Map<string, InstanceRow>();
    const row = (id: string, url: string, registry: InstanceRow['registry']): InstanceRow => {
      let r = rows.get(id);
      if (!r) rows.set(id, (r = { id, url, version: null, zone: null, registry, health: {}, ejected: {}, ejections: 0, weightPercent: 100, inFlight: 0, recentRequests: 0, recentFailures: 0, errorRate: null }));
      return r;
    };
    // A static service's instances register too, but the gateways use strangler.yaml's URLs for it.
    if (s.discovery === 'registry') for (const i of registered.filter((x) => x.service === s.name)) Object.assign(row(i.id, i.url, 'live'), { version: i.version, zone: i.zone });
    for (const v of views) {
      for (const e of v.clusters[s.name] ?? []) {
        const r = row(e.id, e.url, e.source === 'static' ? 'static' : 'gone');
        r.version ??= e.version ?? null;
        r.zone ??= e.zone ?? null;
        r.health[v.gateway] = e.health;
        if (e.ejected) r.ejected[v.gateway] = e.ejectedForMs;
        r.ejections = Math.max(r.ejections, e.ejections);
        r.weightPercent = Math.min(r.weightPercent, e.weightPercent ?? 100);
        r.inFlight += e.inFlight;
        r.recentRequests += e.recentRequests;
        r.recentFailures += e.recentFailures;
      }
    }
    const instances = [...rows.values()].sort((a, b) => a.id.localeCompare(b.id));
    for (const r of instances) r.errorRate = r.recentRequests ? (100 * r.recentFailures) / r.recentRequests : null;
    const gateways = views.map((v) => v.gateway).sort();
    const available = instances.filter(
      (r) => r.registry !== 'gone' && gateways.length > 0 && gateways.every((g) => r.health[g] === 'healthy' && !(g in r.ejected)),
    ).length;
    return { service: s.name, prefix: s.prefix, discovery: s.discovery, gateways, instances, available };
  });
}

/** Reads the registry and the views of the gateways that heartbeated in the last 10 s. */
export async function readInstances(config: ResolvedConfig, redis: Redis, keys: RedisKeys): Promise<ServiceInstances[]> {
  const registered = await createRedisRegistry({ redis, keyPrefix: config.redis.keyPrefix }).list();
  const ids = await redis.zrangebyscore(keys.gateways, Date.now() - 10_000, '+inf');
  const raw = ids.length ? await redis.mget(ids.map((id) => keys.gatewayUpstreams(id))) : [];
  const views = raw.filter((v): v is string => v !== null).map((v) => JSON.parse(v) as GatewayView);
  return mergeInstances(config, registered, views);
}

const fmtMs = (ms: number) => (ms >= 1000 ? `${Math.ceil(ms / 1000)}s` : `${ms}ms`);

/** Pure: the text of `strangler services`, one block per service. */
export function formatInstances(services: ServiceInstances[]): string {
  return services
    .map((s) => {
      const head = `${s.service}${s.prefix ? ` ${s.prefix}` : ''} (discovery: ${s.discovery}): ${s.instances.length} instance${s.instances.length === 1 ? '' : 's'}, ${s.available} available${s.gateways.length ? ` on ${s.gateways.length} gateway${s.gateways.length === 1 ? '' : 's'}` : ', no gateway reporting'}`;
      if (s.instances.length === 0) return `${head}\n  (none${s.discovery === 'registry' ? ' registered: start one with `strangler service ' + s.service + '`' : ''})`;
      const rows = [
        ['INSTANCE', 'URL', 'VERSION', 'ZONE', 'REGISTRY', 'HEALTH', 'EJECTED', 'IN-FLIGHT', 'REQ 1m', 'ERR 1m'],
        ...s.instances.map((r) => {
          const states = Object.values(r.health);
          const health = (states.length === 0 ? '-' : states.every((h) => h === states[0]) ? states[0] : `healthy on ${states.filter((h) => h === 'healthy').length}/${states.length}`) + (r.weightPercent < 100 ? ` (warming, ${r.weightPercent}%)` : '');
          const ejectedOn = Object.values(r.ejected);
          const ejected = ejectedOn.length === 0 ? (r.ejections ? `no (${r.ejections}× before)` : 'no') : `yes, ${fmtMs(Math.max(...ejectedOn))} left (${r.ejections}×)`;
          return [r.id, r.url, r.version ?? '-', r.zone ?? '-', r.registry, health, ejected, String(r.inFlight), String(r.recentRequests), r.errorRate === null ? '-' : `${r.errorRate.toFixed(1)}%`];
        }),
      ];
      const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
      return `${head}\n${rows.map((r) => `  ${r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()}`).join('\n')}`;
    })
    .join('\n\n');
}
