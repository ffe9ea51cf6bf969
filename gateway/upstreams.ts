import { Pool } from 'undici';
import { probeHealth, type ResolvedHealthCheck } from '../core/health-check.ts';
import type { Logger } from '../core/logger.ts';
import { statusClass, type GatewayMetrics } from './metrics.ts';
import { isAvailable, isEjected, newHealth, readmitIfDue, recordCheck, recordOutcome, slowStartWeight, type InstanceHealth, type OutlierConfig, type SlowStartConfig } from './outlier.ts';

export { HEALTH_CHECK_USER_AGENT } from '../core/health-check.ts';

/** Requests and failures of the last minute, in six 10 s buckets. */
class RecentCounts {
  #buckets = Array.from({ length: 6 }, () => ({ at: 0, requests: 0, failures: 0 }));
  add(failed: boolean, now = Date.now()): void {
    const at = Math.floor(now / 10_000);
    const b = this.#buckets[at % 6];
    if (b.at !== at) Object.assign(b, { at, requests: 0, failures: 0 });
    b.requests++;
    if (failed) b.failures++;
  }
  sum(now = Date.now()): { requests: number; failures: number } {
    const at = Math.floor(now / 10_000);
    let requests = 0;
    let failures = 0;
    for (const b of this.#buckets) if (at - b.at < 6) (requests += b.requests), (failures += b.failures);
    return { requests, failures };
  }
}

export interface EndpointSpec {
  id: string;
  url: string;
  source: 'static' | 'registry';
  version?: string;
  zone?: string;
}

/** One instance of an upstream: its own connection pool, in-flight count and health. */
export interface Endpoint extends EndpointSpec {
  origin: string;
  pool: Pool;
  outstanding: number;
  health: InstanceHealth;
  requests: number;
  failures: number;
  recent: RecentCounts;
  checking: boolean;
}

export interface EndpointView extends EndpointSpec {
  health: InstanceHealth['active'];
  available: boolean;
  ejected: boolean;
  ejectedForMs: number;
  ejections: number;
  /** Its share of a full one now, in % (below 100 during slow start); absent from older gateways. */
  weightPercent?: number;
  inFlight: number;
  requests: number;
  failures: number;
  recentRequests: number;
  recentFailures: number;
}

export interface RetryBudget {
  percent: number;
  minConcurrency: number;
}

/** Envoy's retry budget: may one more retry start, with `active` requests and `retrying` retries in flight? */
export function retryBudgetAllows(budget: RetryBudget, active: number, retrying: number): boolean {
  return retrying < Math.max(budget.minConcurrency, (budget.percent / 100) * active);
}

export interface ClusterOptions {
  policy: 'least-outstanding' | 'round-robin';
  outlier: OutlierConfig;
  /** Legacy's or the service's (strangler.yaml); with enabled: false every instance counts as healthy. */
  healthCheck: ResolvedHealthCheck;
  connections?: number;
  connectTimeoutMs?: number;
  /** With no instance available, still send to one (legacy: there is nowhere else to go). */
  panic?: boolean;
  /** Concurrent retries allowed: a share of the requests in flight, at least minConcurrency (default: unbounded). */
  retryBudget?: RetryBudget;
  /** New and recovered instances get a growing share over this window (default: a full share at once). */
  slowStart?: SlowStartConfig;
  /** Zone-aware routing: the gateway's zone, and how many instances must be available there to keep to it. */
  localZone?: { zone: string; minAvailable: number };
  metrics?: GatewayMetrics;
  logger?: Logger;
}

/**
 * An upstream service as a set of instances (Envoy's cluster): static ones from strangler.yaml
 * and/or those the registry lists. Requests go to an available instance (healthy by the active
 * checks, not ejected by outlier detection) by least outstanding requests or round robin.
 */
export class Cluster {
  readonly name: string;
  readonly #o: ClusterOptions;
  /** Replaced whole on a membership change, never edited: a request's pick iterates it as is. */
  #list: Endpoint[] = [];
  #next = 0;
  #retrying = 0;
  #timer: NodeJS.Timeout | null = null;

  constructor(name: string, options: ClusterOptions, statics: EndpointSpec[] = []) {
    this.name = name;
    this.#o = options;
    for (const s of statics) this.#add(s, 'healthy');
  }

  /** Whether the active health checks run: off, an instance is healthy from the start. */
  get #checked(): boolean {
    return this.#o.healthCheck.enabled;
  }

  get endpoints(): Endpoint[] {
    return this.#list;
  }

  /**
   * Registry membership: adds the new instances (checked at once, routable on their first pass),
   * drops the gone (unless `keepMissing`: just after a registry outage, when entries lapsed).
   */
  setMembers(specs: EndpointSpec[], options: { keepMissing?: boolean } = {}): Promise<void> {
    const keep = new Set(specs.map((s) => s.id));
    if (!options.keepMissing) for (const e of this.#list) if (e.source === 'registry' && !keep.has(e.id)) this.#remove(e, 'deregistered or lapsed');
    const checks: Promise<void>[] = [];
    for (const s of specs) {
      const known = this.#list.find((e) => e.id === s.id);
      if (known) Object.assign(known, { version: s.version, zone: s.zone });
      else if (this.#checked) checks.push(this.#check(this.#add(s, 'unknown')));
      else this.#add(s, 'healthy');
    }
    return Promise.all(checks).then(() => undefined);
  }

  /** Whether an instance other than `exclude` could take a request now. */
  hasAvailable(exclude?: ReadonlySet<Endpoint>, now = Date.now()): boolean {
    for (const e of this.#list) if (!exclude?.has(e) && isAvailable(e.health, now)) return true;
    return false;
  }

  /**
   * The instance for the next request, or null when none is available (with `panic`: the least
   * busy of all). `exclude`: instances this request already failed on.
   */
  pick(exclude?: ReadonlySet<Endpoint>): Endpoint | null {
    const now = Date.now();
    const all = this.endpoints;
    if (all.length === 0) return null;
    // Zone-aware: keep to the gateway's zone while enough instances are available there.
    const local = this.#o.localZone;
    let zone: string | null = null;
    if (local) {
      let n = 0;
      for (const e of all) if (e.zone === local.zone && !exclude?.has(e) && isAvailable(e.health, now)) n++;
      if (n >= local.minAvailable) zone = local.zone;
    }
    const start = this.#next++ % all.length;
    let best: Endpoint | null = null;
    let bestLoad = Number.POSITIVE_INFINITY;
    let skipped: Endpoint | null = null;
    for (let i = 0; i < all.length; i++) {
      const e = all[(start + i) % all.length];
      if (readmitIfDue(e.health, now)) this.#event(e, 'readmitted');
      if (exclude?.has(e) || !isAvailable(e.health, now) || (zone !== null && e.zone !== zone)) continue;
      const weight = this.#weight(e, now);
      if (this.#o.policy === 'round-robin') {
        // Slow start: an instance still warming takes its turn with probability = its weight.
        if (weight < 1 && Math.random() >= weight) {
          skipped ??= e;
          continue;
        }
        return e;
      }
      // Least outstanding, weighted (as Envoy's least request with weights): (in flight + 1) / weight.
      const load = (e.outstanding + 1) / weight;
      if (load < bestLoad) {
        best = e;
        bestLoad = load;
      }
    }
    best ??= skipped;
    if (best || !this.#o.panic) return best;
    for (const e of all) if (!exclude?.has(e) && (!best || e.outstanding < best.outstanding)) best = e;
    return best;
  }

  /**
   * Starts a retry if the retry budget allows one now; the caller calls the returned function
   * when the retry is over. Null: over budget (counted on /metrics), do not retry.
   */
  startRetry(): (() => void) | null {
    const budget = this.#o.retryBudget;
    if (budget) {
      let active = 0;
      for (const e of this.#list) active += e.outstanding;
      if (!retryBudgetAllows(budget, active, this.#retrying)) {
        this.#o.metrics?.retriesOverBudget.inc({ service: this.name });
        return null;
      }
    }
    this.#retrying++;
    let done = false;
    return () => {
      if (!done) this.#retrying--;
      done = true;
    };
  }

  /** One request's outcome on an instance, for outlier detection and the per-instance figures. */
  report(e: Endpoint, outcome: { ok: boolean; status?: number; kind?: string }): void {
    const now = Date.now();
    e.requests++;
    e.recent.add(!outcome.ok, now);
    const m = this.#o.metrics;
    if (m) m.instanceRequests.labels(this.name, e.id, outcome.status ? statusClass(outcome.status) : 'none').value++;
    if (!outcome.ok) {
      e.failures++;
      m?.instanceFailures.inc({ service: this.name, instance: e.id, kind: outcome.kind ?? '5xx' });
    }
    let ejected = 0;
    if (!outcome.ok) for (const x of this.#list) if (isEjected(x.health, now)) ejected++;
    const ms = recordOutcome(e.health, outcome.ok, now, this.#o.outlier, { ejected, total: this.#list.length });
    if (ms) {
      m?.ejections.inc({ service: this.name, instance: e.id });
      this.#event(e, 'ejected', { forMs: ms, ejections: e.health.ejections });
    }
  }

  /**
   * Starts the active health checks: every instance, every interval ±10 % (as Envoy's
   * interval_jitter, so many gateways do not ask every instance in the same instant).
   */
  startHealthChecks(): void {
    if (this.#timer || !this.#checked) return;
    const schedule = () => {
      const jitter = this.#o.healthCheck.intervalMs * 0.1 * (2 * Math.random() - 1);
      this.#timer = setTimeout(() => {
        for (const e of this.#list) void this.#check(e);
        if (this.#timer) schedule();
      }, this.#o.healthCheck.intervalMs + jitter);
      this.#timer.unref();
    };
    schedule();
  }

  view(now = Date.now()): EndpointView[] {
    return this.endpoints.map((e) => {
      const recent = e.recent.sum(now);
      return {
        id: e.id,
        url: e.url,
        source: e.source,
        version: e.version,
        zone: e.zone,
        health: e.health.active,
        available: isAvailable(e.health, now),
        ejected: isEjected(e.health, now),
        ejectedForMs: Math.max(0, e.health.ejectedUntil - now),
        ejections: e.health.ejections,
        weightPercent: Math.round(100 * this.#weight(e, now)),
        inFlight: e.outstanding,
        requests: e.requests,
        failures: e.failures,
        recentRequests: recent.requests,
        recentFailures: recent.failures,
      };
    });
  }

  async close(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    await Promise.all(this.#list.map((e) => e.pool.close().catch(() => undefined)));
    this.#list = [];
  }

  /** Its share of a full one now: below 1 while it warms up (slow start). */
  #weight(e: Endpoint, now: number): number {
    return this.#o.slowStart ? slowStartWeight(e.health, now, this.#o.slowStart) : 1;
  }

  #add(s: EndpointSpec, active: InstanceHealth['active']): Endpoint {
    const origin = new URL(s.url).origin;
    const pool = new Pool(origin, {
      connections: this.#o.connections ?? 128,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      connect: { timeout: this.#o.connectTimeoutMs ?? 2_000 },
    });
    const e: Endpoint = { ...s, origin, pool, outstanding: 0, health: newHealth(active), requests: 0, failures: 0, recent: new RecentCounts(), checking: false };
    this.#list = [...this.#list, e];
    this.#event(e, 'added');
    return e;
  }

  #remove(e: Endpoint, why: string): void {
    this.#list = this.#list.filter((x) => x !== e);
    this.#event(e, 'removed', { why });
    // New requests no longer pick it; close() lets the ones in flight finish first.
    void e.pool.close().catch(() => undefined);
  }

  async #check(e: Endpoint): Promise<void> {
    if (e.checking) return;
    e.checking = true;
    const hc = this.#o.healthCheck;
    let ok = false;
    try {
      // The same request, status rule and deadline as the cutover preflight's (core/health-check.ts).
      ok = (await probeHealth(e.url, hc, e.pool)).ok;
    } finally {
      e.checking = false;
    }
    if (!this.#list.includes(e)) return;
    const change = recordCheck(e.health, ok, hc);
    if (change) this.#event(e, change);
  }

  #event(e: Endpoint, kind: 'added' | 'removed' | 'healthy' | 'unhealthy' | 'ejected' | 'readmitted', detail: Record<string, unknown> = {}): void {
    const quiet = kind === 'added' || (kind === 'healthy' && e.health.passes <= 1 && e.source === 'static');
    const log = { service: this.name, instance: e.id, url: e.url, ...detail };
    if (kind === 'ejected' || kind === 'unhealthy') this.#o.logger?.warn(log, `instance ${kind}: out of rotation`);
    else if (!quiet) this.#o.logger?.info(log, `instance ${kind}`);
  }
}

/** Errors that mean the request never reached the upstream's application (safe to retry elsewhere). */
export function neverReached(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === 'NO_INSTANCE' || code === 'ECONNREFUSED' || code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'ECONNRESET' || code === 'EHOSTUNREACH' || code === 'ENOTFOUND' || code === 'UND_ERR_SOCKET' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_CLOSED' || code === 'UND_ERR_DESTROYED';
}

/**
 * What a failed request says about the instance, for outlier detection: a status another
 * instance may not give (RetryableStatus), a timeout, a refused or a reset connection; null when
 * it says nothing (the client went away, the body was too large).
 */
export function failureKind(err: unknown): string | null {
  const { code, status } = err as { code?: string; status?: number };
  if (code === 'RETRYABLE_STATUS') return String(status);
  if (isTimeout(err)) return 'timeout';
  if (code === 'ECONNREFUSED' || code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'EHOSTUNREACH') return 'connect';
  if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET') return 'reset';
  return null;
}

export function isTimeout(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT';
}

/** The request found no instance to go to: none registered, or all unhealthy or ejected. */
export class NoInstanceError extends Error {
  readonly code = 'NO_INSTANCE';
  constructor(cluster: string, total: number) {
    super(total === 0 ? `no instance of ${cluster} is registered` : `none of the ${total} instances of ${cluster} is healthy`);
  }
}
