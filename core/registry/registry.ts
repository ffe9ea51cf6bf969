/**
 * Service discovery behind a narrow interface. Instances register themselves (with a TTL their
 * heartbeats refresh) and deregister on a graceful stop; a crashed instance vanishes when its TTL
 * lapses. Gateways list the live instances of a service and watch for changes.
 *
 * Redis implements it here (redis-registry.ts). Another registry plugs in behind the same five
 * methods: Consul (an agent service with a TTL check; `register` = PUT /v1/agent/service/register,
 * `heartbeat` = PUT /v1/agent/check/pass, `list` = /v1/health/service/<name>?passing, `watch` =
 * a blocking query on the same endpoint), or etcd (a key per instance attached to a lease;
 * `heartbeat` = lease keep-alive, `watch` = a watch on the service's key prefix).
 */

export interface ServiceInstance {
  /** The service name of strangler.yaml, such as "invoices". */
  service: string;
  /** Unique per running instance. */
  id: string;
  /** Where the gateway reaches it: http://host:port. */
  url: string;
  version: string;
  zone: string;
  /** ISO time the instance registered. */
  startedAt: string;
}

export type RegistryChange = { service: string; id: string; change: 'up' | 'down' };

export interface Registration {
  readonly instance: ServiceInstance;
  /** Stops the heartbeats and removes the entry (announced to watchers). Safe to call twice. */
  deregister(): Promise<void>;
}

export interface ServiceRegistry {
  /** Adds the instance and keeps it alive with heartbeats every `heartbeatMs` until deregistered. */
  register(instance: ServiceInstance, options?: { ttlMs?: number; heartbeatMs?: number }): Promise<Registration>;
  /** Removes an instance now (also what a graceful stop does through its Registration). */
  deregister(service: string, id: string): Promise<void>;
  /** Refreshes the TTL; re-creates the entry if it had lapsed (or the store lost it). */
  heartbeat(instance: ServiceInstance, ttlMs: number): Promise<void>;
  /** The live instances of a service (every service when omitted). */
  list(service?: string): Promise<ServiceInstance[]>;
  /** Calls `listener` on every announced change; returns the unsubscribe. Lapsed TTLs are not announced: poll `list`. */
  watch(listener: (change: RegistryChange) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}
