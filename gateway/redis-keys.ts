/**
 * Every Redis key and channel the data plane and the control plane share, in one place, under
 * strangler.yaml's redis.keyPrefix. Redis holds only what may be lost (DESIGN.md): losing any of
 * these degrades speed or visibility, never the route table.
 */
export function redisKeys(prefix: string) {
  return {
    /** Pub/sub: a new route version was committed (message: the version). */
    routesChanged: `${prefix}routes:changed`,
    /** Sorted set: gateway instance id → last heartbeat (ms). */
    gateways: `${prefix}gateways`,
    /** Hash per gateway instance: version applied, degraded, pid, host, heartbeat. */
    gateway: (id: string) => `${prefix}gateway:${id}`,
    /** String per gateway instance: its view of every upstream's instances (JSON, short TTL), for `strangler services`. */
    gatewayUpstreams: (id: string) => `${prefix}gateway:${id}:upstreams`,
    /** Rate-limit counters: `<this><window number>:<user or ip>` per rule prefix. */
    rateLimit: (rule: string) => `${prefix}rl:${rule}:`,
    /** Credential-attempt counters: `<this><window number>:<ip:address or acct:hash>` per endpoint. */
    credentialLimit: (kind: 'address' | 'account', path: string) => `${prefix}cl:${kind}:${path}:`,
    /** Per-route, per-target request figures in time buckets, summed over gateways. */
    routeMetrics: (service: string, target: string, bucketStartMs: number) => `${prefix}rm:${service}:${target}:${bucketStartMs}`,
    /** Shadow comparison counters per service (hash by outcome: match, noise, lagged, mismatch, skipped, error). */
    shadowCounts: (service: string) => `${prefix}shadow:${service}:counts`,
    /** Noisy JSON paths learned per service (hash: path with [*] → times legacy's two answers differed there). */
    shadowNoise: (service: string) => `${prefix}shadow:${service}:noise`,
    /** The last N shadow mismatches per service (list of JSON samples, newest first). */
    shadowSamples: (service: string) => `${prefix}shadow:${service}:samples`,
  };
}

export type RedisKeys = ReturnType<typeof redisKeys>;
