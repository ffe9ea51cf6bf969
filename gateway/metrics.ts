import type { Redis } from 'ioredis';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { DependencyHealth } from '../core/redis-health.ts';
import type { RedisKeys } from './redis-keys.ts';

/**
 * Latency bucket bounds (ms) shared by Prometheus and the Redis figures canary analysis reads;
 * fine enough between 50 ms and 1 s that a percentile read off them moves by less than 1.5×
 * from one bucket to the next.
 */
export const LATENCY_BOUNDS_MS = [5, 10, 25, 50, 75, 100, 150, 200, 250, 300, 400, 500, 650, 800, 1000, 1500, 2500, 5000, 10000] as const;
/** The bucket a value falls in: the first bound it does not exceed, or bounds.length past the last. */
export function bucketIndex(bounds: readonly number[], value: number): number {
  let i = 0;
  while (i < bounds.length && value > bounds[i]) i++;
  return i;
}

/** An HTTP status as the metrics label it: 2xx, 5xx... */
export function statusClass(status: number): string {
  return `${Math.floor(status / 100)}xx`;
}

/** Width of one Redis time bucket. */
export const BUCKET_MS = 5_000;

/** The gateway's Prometheus metrics, on its own registry (several gateways can share a process in tests). */
export function createGatewayMetrics(options: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry });
  return {
    registry,
    requests: new RequestCounter(registry, 'strangler_gateway_requests_total', 'Requests by route prefix, target and status class', ['prefix', 'target', 'class']),
    latency: new RequestHistogram(registry, 'strangler_gateway_request_duration_seconds', 'Time to the last byte, by prefix and target', ['prefix', 'target'], LATENCY_BOUNDS_MS.map((b) => b / 1000)),
    fallbacks: new Counter({ name: 'strangler_gateway_fallbacks_total', help: 'Requests served by legacy because the service could not be reached', labelNames: ['service', 'reason'] as const, registers: [registry] }),
    shadow: new Counter({ name: 'strangler_gateway_shadow_total', help: 'Shadow comparisons by outcome (match, noise, lagged, mismatch, skipped, error)', labelNames: ['service', 'outcome'] as const, registers: [registry] }),
    instanceRequests: new RequestCounter(registry, 'strangler_gateway_instance_requests_total', 'Requests per upstream instance by status class (none: no answer)', ['service', 'instance', 'class']),
    instanceFailures: new Counter({ name: 'strangler_gateway_instance_failures_total', help: 'Failed requests per upstream instance (5xx, refused, reset, timeout)', labelNames: ['service', 'instance', 'kind'] as const, registers: [registry] }),
    ejections: new Counter({ name: 'strangler_gateway_instance_ejections_total', help: 'Outlier ejections per upstream instance', labelNames: ['service', 'instance'] as const, registers: [registry] }),
    retries: new Counter({ name: 'strangler_gateway_retries_total', help: 'Requests sent again to another instance after a failure', labelNames: ['service', 'reason'] as const, registers: [registry] }),
    retriesOverBudget: new Counter({ name: 'strangler_gateway_retries_over_budget_total', help: 'Retries not sent because the retry budget was spent', labelNames: ['service'] as const, registers: [registry] }),
    instanceInFlight: new Gauge({ name: 'strangler_gateway_instance_in_flight', help: 'Requests in flight per upstream instance', labelNames: ['service', 'instance'] as const, registers: [registry] }),
    instanceAvailable: new Gauge({ name: 'strangler_gateway_instance_available', help: '1 while an instance is healthy and not ejected', labelNames: ['service', 'instance'] as const, registers: [registry] }),
    availableInstances: new Gauge({ name: 'strangler_gateway_available_instances', help: 'Instances of a service that may take requests (0: canary traffic goes to legacy)', labelNames: ['service'] as const, registers: [registry] }),
    routeVersion: new Gauge({ name: 'strangler_gateway_route_version', help: 'Route table version applied', registers: [registry] }),
    degraded: new Gauge({ name: 'strangler_gateway_degraded', help: '1 while /readyz says degraded: serving a route snapshot, control database unreachable, or Redis unavailable', registers: [registry] }),
    rateLimited: new Counter({ name: 'strangler_gateway_rate_limited_total', help: 'Requests answered 429', labelNames: ['prefix'] as const, registers: [registry] }),
    credentialLimited: new Counter({ name: 'strangler_gateway_credential_limited_total', help: 'Credential attempts answered 429, by the limit that refused them (address, account)', labelNames: ['path', 'limit'] as const, registers: [registry] }),
    storeErrors: new Counter({ name: 'strangler_gateway_store_errors_total', help: 'Redis errors on the request path (the rate limit decided on local counts)', labelNames: ['store'] as const, registers: [registry] }),
    redisAvailable: new Gauge({ name: 'strangler_gateway_redis_available', help: '1 while Redis answers within redis.commandTimeoutMs', registers: [registry] }),
    redisUnavailable: new Counter({
      name: 'strangler_gateway_redis_unavailable_total',
      help: 'Work done without Redis while it was unavailable: rate-limit (decided on local counts), heartbeat (skipped), figures (held back, sent later), figures-lost (dropped), shadow (counts not shared), registry (listing skipped)',
      labelNames: ['what'] as const,
      registers: [registry],
    }),
    clientAborts: new Counter({ name: 'strangler_gateway_client_aborts_total', help: 'Requests the client gave up on before the answer was complete (not upstream failures: no 5xx, no outlier ejection)', labelNames: ['prefix', 'target'] as const, registers: [registry] }),
  };
}

export type GatewayMetrics = ReturnType<typeof createGatewayMetrics>;

type MetricValue = { labels: Record<string, string | number>; value: number; metricName?: string };

/**
 * The metrics every request touches, kept out of prom-client's hot path: its inc() and observe()
 * check and hash the label object on every call (about 5 µs a request together on the bench
 * machine, with three such metrics). Here the series for a set of label values is found through
 * one Map per label, without building a key, and counted with a plain increment; prom-client's
 * registry renders it like its own metrics (it asks any registered metric for get()).
 */
abstract class RequestMetric<S> {
  readonly aggregator = 'sum';
  /** Series by their label values, one Map level per label: a lookup builds no key string. */
  readonly #tree = new Map<string, unknown>();
  protected readonly series: Array<{ labels: Record<string, string>; s: S }> = [];

  constructor(
    registry: Registry,
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
  ) {
    if (labelNames.length === 0) throw new Error(`${name}: a request metric needs at least one label`);
    registry.registerMetric(this as never);
  }

  /** A new series, all zero. */
  protected abstract newSeries(): S;

  protected find(values: readonly string[]): S {
    if (values.length !== this.labelNames.length) throw new Error(`${this.name} takes ${this.labelNames.length} label values, got ${values.length}`);
    let level = this.#tree;
    const last = values.length - 1;
    for (let i = 0; i < last; i++) {
      let next = level.get(values[i]) as Map<string, unknown> | undefined;
      if (!next) level.set(values[i], (next = new Map()));
      level = next;
    }
    let found = level.get(values[last]) as S | undefined;
    if (!found) {
      level.set(values[last], (found = this.newSeries()));
      this.series.push({ labels: Object.fromEntries(this.labelNames.map((n, i) => [n, values[i]])), s: found });
    }
    return found;
  }

  reset(): void {
    this.#tree.clear();
    this.series.length = 0;
  }
}

/** A labelled counter for the request path (see RequestMetric). */
export class RequestCounter extends RequestMetric<{ value: number }> {
  readonly type = 'counter';

  /** The series for these label values, in labelNames order; `.value++` counts. */
  labels(...values: string[]): { value: number } {
    return this.find(values);
  }

  protected newSeries(): { value: number } {
    return { value: 0 };
  }

  async get() {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.series.map(({ labels, s }): MetricValue => ({ labels, value: s.value })) };
  }
}

/** A labelled histogram for the request path (see RequestMetric), in Prometheus' cumulative bucket form. */
export class RequestHistogram extends RequestMetric<{ counts: number[]; sum: number }> {
  readonly type = 'histogram';

  constructor(
    registry: Registry,
    name: string,
    help: string,
    labelNames: readonly string[],
    readonly bounds: readonly number[],
  ) {
    super(registry, name, help, labelNames);
  }

  /** The series for these label values, in labelNames order. */
  labels(...values: string[]): { counts: number[]; sum: number } {
    return this.find(values);
  }

  protected newSeries(): { counts: number[]; sum: number } {
    return { counts: new Array<number>(this.bounds.length + 1).fill(0), sum: 0 };
  }

  observe(series: { counts: number[]; sum: number }, value: number): void {
    series.counts[bucketIndex(this.bounds, value)]++;
    series.sum += value;
  }

  async get() {
    const values: MetricValue[] = [];
    for (const { labels, s } of this.series) {
      let cumulative = 0;
      s.counts.forEach((n, i) => {
        cumulative += n;
        values.push({ labels: { le: i < this.bounds.length ? this.bounds[i] : '+Inf', ...labels }, value: cumulative, metricName: `${this.name}_bucket` });
      });
      values.push({ labels, value: s.sum, metricName: `${this.name}_sum` }, { labels, value: cumulative, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}

/**
 * How a request the route gave the service was failed without a 5xx from it: it fell back to
 * legacy (the service could not be reached), found no available instance, or was answered only
 * after an instance it tried had been ejected. Canary analysis counts each as a service failure.
 */
export const SERVICE_FAILURES = ['fallback', 'noinstance', 'ejected'] as const;
export type ServiceFailure = (typeof SERVICE_FAILURES)[number];

interface Figures extends Record<ServiceFailure, number> {
  requests: number;
  errors: number;
  latency: number[];
}

const newFigures = (): Figures => ({ requests: 0, errors: 0, fallback: 0, noinstance: 0, ejected: 0, latency: new Array(LATENCY_BOUNDS_MS.length + 1).fill(0) });

/** Buckets of figures held back while Redis is unavailable: 10 minutes; older ones are dropped (and counted). */
const MAX_HELD_BUCKETS = 120;

/** Adds `from` into the map's figures for `key`. */
function addFigures(into: Map<string, Figures>, key: string, from: Figures): void {
  const f = into.get(key);
  if (!f) return void into.set(key, from);
  f.requests += from.requests;
  f.errors += from.errors;
  for (const k of SERVICE_FAILURES) f[k] += from[k];
  from.latency.forEach((n, i) => (f.latency[i] += n));
}

/**
 * Per-route, per-target figures (requests, 5xx, latency histogram; on the service's side also
 * the requests it failed otherwise, SERVICE_FAILURES) summed in memory and flushed
 * to Redis once a second into 5 s buckets, so the canary analysis reads one total for the route
 * across every gateway instance without a Redis round trip per request.
 *
 * While Redis is unavailable the figures are held back by bucket (up to MAX_HELD_BUCKETS) and sent
 * when it answers again, into the buckets they belong to. A flush that timed out may still be
 * applied by a Redis that was only slow: it is dropped and counted (figures-lost) rather than
 * risk counting requests twice; one that never left (no connection) is held back.
 */
export class RouteFigures {
  #pending = new Map<string, Figures>();
  /** Bucket start (ms) → figures not yet in Redis. */
  #held = new Map<number, Map<string, Figures>>();
  #timer: NodeJS.Timeout | null = null;
  readonly #redis: Redis;
  readonly #keys: RedisKeys;
  readonly #health: DependencyHealth | undefined;

  constructor(redis: Redis, keys: RedisKeys, health?: DependencyHealth) {
    this.#redis = redis;
    this.#keys = keys;
    this.#health = health;
  }

  record(service: string, target: 'legacy' | 'service', status: number, ms: number): void {
    const f = this.#figures(`${service}\u0000${target}`);
    f.requests++;
    if (status >= 500) f.errors++;
    f.latency[bucketIndex(LATENCY_BOUNDS_MS, ms)]++;
  }

  /** Figures summed elsewhere (the HAProxy engine's Lua): requests, 5xx, and counts per LATENCY_BOUNDS_MS bucket (one more: past the last). */
  add(service: string, target: 'legacy' | 'service', requests: number, errors: number, latency: readonly number[]): void {
    const f = this.#figures(`${service}\u0000${target}`);
    f.requests += requests;
    f.errors += errors;
    latency.forEach((n, i) => i < f.latency.length && (f.latency[i] += n));
  }

  /**
   * A request the service failed without answering it a 5xx (see SERVICE_FAILURES), on the
   * service's side; it is recorded where it was served as well (legacy, or the service for `ejected`).
   */
  recordFailure(service: string, failure: ServiceFailure): void {
    this.#figures(`${service}\u0000service`)[failure]++;
  }

  #figures(key: string): Figures {
    let f = this.#pending.get(key);
    if (!f) this.#pending.set(key, (f = newFigures()));
    return f;
  }

  start(intervalMs = 1_000): void {
    this.#timer ??= setInterval(() => void this.flush(), intervalMs);
    this.#timer.unref();
  }

  /** Figures not yet in Redis (held back while it is unavailable), for tests and /metrics. */
  get heldBuckets(): number {
    return this.#held.size;
  }

  async flush(): Promise<void> {
    if (this.#pending.size > 0) {
      const bucket = Math.floor(Date.now() / BUCKET_MS) * BUCKET_MS;
      const into = this.#held.get(bucket) ?? new Map<string, Figures>();
      for (const [key, f] of this.#pending) addFigures(into, key, f);
      this.#held.set(bucket, into);
      this.#pending = new Map();
    }
    if (this.#held.size === 0) return;
    const health = this.#health;
    if (health && !health.ok) {
      health.unavailable('figures');
      for (const bucket of [...this.#held.keys()].sort((a, b) => a - b).slice(0, Math.max(0, this.#held.size - MAX_HELD_BUCKETS))) {
        this.#held.delete(bucket);
        health.unavailable('figures-lost');
      }
      return;
    }
    const batches = this.#held;
    this.#held = new Map();
    const multi = this.#redis.multi();
    for (const [bucket, batch] of batches) {
      for (const [key, f] of batch) {
        const [service, target] = key.split('\u0000');
        const k = this.#keys.routeMetrics(service, target, bucket);
        multi.hincrby(k, 'requests', f.requests).hincrby(k, 'errors', f.errors);
        for (const x of SERVICE_FAILURES) if (f[x]) multi.hincrby(k, x, f[x]);
        // Fields are named by bound (l100, linf), so gateways of different versions add up.
        f.latency.forEach((n, i) => n && multi.hincrby(k, `l${i < LATENCY_BOUNDS_MS.length ? LATENCY_BOUNDS_MS[i] : 'inf'}`, n));
        multi.pexpire(k, 3_600_000);
      }
    }
    // Requests never wait on this: figures may be lost (DESIGN.md), and are counted when they are.
    try {
      const results = await multi.exec();
      const failed = results?.find(([err]) => err);
      if (!results || failed) throw failed?.[0] ?? new Error('the figures transaction was discarded');
    } catch (err) {
      health?.failed(err);
      if (/Stream isn't writeable/.test((err as Error).message)) {
        // Never sent (no connection): held back for the next flush.
        for (const [bucket, batch] of batches) {
          const into = this.#held.get(bucket) ?? new Map<string, Figures>();
          for (const [key, f] of batch) addFigures(into, key, f);
          this.#held.set(bucket, into);
        }
        health?.unavailable('figures');
      } else health?.unavailable('figures-lost');
    }
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    await this.flush();
  }
}

export interface WindowFigures extends Record<ServiceFailure, number> {
  requests: number;
  errors: number;
  errorRate: number;
  /** 99th and 90th percentile latency, ms, as Prometheus' histogram_quantile reads them (Infinity past the last bound). */
  p99Ms: number;
  p90Ms: number;
}

/** Sums one route target's figures over [fromMs, toMs), across every gateway. */
export async function readRouteFigures(redis: Redis, keys: RedisKeys, service: string, target: 'legacy' | 'service', fromMs: number, toMs: number): Promise<WindowFigures> {
  return sumBuckets(await readBuckets(redis, keys, service, target, fromMs, toMs));
}

/**
 * One target's figures per interval of `stepMs` (a multiple of BUCKET_MS) over [fromMs, toMs),
 * oldest first, read in one round trip: the dashboard's canary charts, interval by interval.
 */
export async function readRouteSeries(redis: Redis, keys: RedisKeys, service: string, target: 'legacy' | 'service', fromMs: number, toMs: number, stepMs: number): Promise<Array<{ at: number } & WindowFigures>> {
  const per = Math.max(1, Math.round(stepMs / BUCKET_MS));
  const first = Math.floor(fromMs / BUCKET_MS) * BUCKET_MS;
  const hashes = await readBuckets(redis, keys, service, target, first, toMs);
  const out: Array<{ at: number } & WindowFigures> = [];
  for (let i = 0; i < hashes.length; i += per) out.push({ at: first + i * BUCKET_MS, ...sumBuckets(hashes.slice(i, i + per)) });
  return out;
}

/** The gateways' buckets of one target over [fromMs, toMs), oldest first. */
async function readBuckets(redis: Redis, keys: RedisKeys, service: string, target: 'legacy' | 'service', fromMs: number, toMs: number): Promise<Array<Record<string, string>>> {
  const first = Math.floor(fromMs / BUCKET_MS) * BUCKET_MS;
  const multi = redis.multi();
  for (let b = first; b < toMs; b += BUCKET_MS) multi.hgetall(keys.routeMetrics(service, target, b));
  return ((await multi.exec()) ?? []).map(([, v]) => v as Record<string, string>);
}

/** Pure: the figures of some buckets together. */
function sumBuckets(results: ReadonlyArray<Record<string, string>>): WindowFigures {
  let requests = 0;
  let errors = 0;
  const failed: Record<ServiceFailure, number> = { fallback: 0, noinstance: 0, ejected: 0 };
  const latency = new Map<number, number>();
  for (const h of results) {
    requests += Number(h.requests ?? 0);
    errors += Number(h.errors ?? 0);
    for (const k of SERVICE_FAILURES) failed[k] += Number(h[k] ?? 0);
    for (const field in h) {
      if (field[0] !== 'l') continue;
      const bound = field === 'linf' ? Number.POSITIVE_INFINITY : Number(field.slice(1));
      if (!Number.isNaN(bound)) latency.set(bound, (latency.get(bound) ?? 0) + Number(h[field]));
    }
  }
  const buckets = [...latency].sort((a, b) => a[0] - b[0]).map(([le, count]) => ({ le, count }));
  return { requests, errors, ...failed, errorRate: requests ? errors / requests : 0, p99Ms: histogramQuantile(buckets, 0.99), p90Ms: histogramQuantile(buckets, 0.9) };
}

/**
 * The q-quantile of a histogram (buckets by upper bound `le`, counts not cumulative), as
 * Prometheus' histogram_quantile computes it: linear interpolation inside the bucket that holds
 * the rank; in the unbounded last bucket, the highest finite bound (Infinity if there is none).
 */
export function histogramQuantile(buckets: ReadonlyArray<{ le: number; count: number }>, q: number): number {
  const total = buckets.reduce((n, b) => n + b.count, 0);
  if (total === 0) return 0;
  const rank = q * total;
  let below = 0;
  for (let i = 0; i < buckets.length; i++) {
    const { le, count } = buckets[i];
    if (count > 0 && below + count >= rank) {
      const lower = i === 0 ? 0 : buckets[i - 1].le;
      if (!Number.isFinite(le)) return i === 0 ? Number.POSITIVE_INFINITY : lower;
      return Math.round((lower + ((le - lower) * (rank - below)) / count) * 10) / 10;
    }
    below += count;
  }
  return Number.POSITIVE_INFINITY;
}
