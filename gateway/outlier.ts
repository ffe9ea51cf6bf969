/**
 * Pure health bookkeeping of one upstream instance: active health checks (the gateway asks
 * /health on an interval) and passive outlier detection (the answers real requests get), as
 * Envoy does both. The cluster applies these to its instances; nothing here does I/O.
 */

export interface HealthCheckConfig {
  healthyThreshold: number;
  unhealthyThreshold: number;
}

export interface OutlierConfig {
  consecutiveFailures: number;
  baseEjectionMs: number;
  maxEjectionMs: number;
  maxEjectionPercent: number;
}

export interface InstanceHealth {
  /** unknown: registered, not yet checked (not routable); unhealthy: failed its checks. */
  active: 'unknown' | 'healthy' | 'unhealthy';
  /** Consecutive active passes and failures. */
  passes: number;
  fails: number;
  /** Consecutive failed requests (passive). */
  consecutiveFailures: number;
  /** Ejected until this time (ms), 0 when not ejected. */
  ejectedUntil: number;
  /** Ejections so far: the next one lasts baseEjectionMs × (this + 1). */
  ejections: number;
  /** When it was last readmitted after an ejection (ms), 0 never. */
  readmittedAt: number;
  /** When its checks last made it healthy (ms); 0 for instances healthy from the start (no slow start). */
  healthySince: number;
}

export interface SlowStartConfig {
  /** How long a new or recovered instance takes to get its full share (0: at once). */
  windowMs: number;
  /** Its share at first, in percent of a full one. */
  minWeightPercent: number;
}

export function newHealth(active: InstanceHealth['active']): InstanceHealth {
  return { active, passes: 0, fails: 0, consecutiveFailures: 0, ejectedUntil: 0, ejections: 0, readmittedAt: 0, healthySince: 0 };
}

/** Routable: checked healthy and not ejected. */
export function isAvailable(h: InstanceHealth, now: number): boolean {
  return h.active === 'healthy' && h.ejectedUntil <= now;
}

export function isEjected(h: InstanceHealth, now: number): boolean {
  return h.ejectedUntil > now;
}

/**
 * One active check result. A new instance is healthy after its first pass (as Envoy at start);
 * an unhealthy one needs `healthyThreshold` passes in a row, a healthy one fails after
 * `unhealthyThreshold` failures in a row. Returns the transition, if any.
 */
export function recordCheck(h: InstanceHealth, ok: boolean, c: HealthCheckConfig, now = Date.now()): 'healthy' | 'unhealthy' | null {
  if (ok) {
    h.passes++;
    h.fails = 0;
    if (h.active === 'unknown' || (h.active === 'unhealthy' && h.passes >= c.healthyThreshold)) {
      h.active = 'healthy';
      h.healthySince = now;
      return 'healthy';
    }
    return null;
  }
  h.fails++;
  h.passes = 0;
  if (h.active === 'healthy' && h.fails >= c.unhealthyThreshold) {
    h.active = 'unhealthy';
    return 'unhealthy';
  }
  // A new instance that fails its first check stays out of rotation, marked as such.
  if (h.active === 'unknown' && h.fails >= c.unhealthyThreshold) {
    h.active = 'unhealthy';
    return 'unhealthy';
  }
  return null;
}

/** Readmits an instance whose ejection time is over; returns true when it did. */
export function readmitIfDue(h: InstanceHealth, now: number): boolean {
  if (h.ejectedUntil === 0 || h.ejectedUntil > now) return false;
  h.ejectedUntil = 0;
  h.consecutiveFailures = 0;
  h.readmittedAt = now;
  return true;
}

/**
 * One request's outcome. After `consecutiveFailures` failures in a row the instance is ejected,
 * unless that would eject more than maxEjectionPercent of the cluster (one instance always may
 * be, as in Envoy). The ejection lasts baseEjectionMs × times ejected, capped at maxEjectionMs;
 * the multiplier starts over once the instance has stayed in for maxEjectionMs. Returns the
 * ejection time (ms) when this outcome ejected it, else 0.
 */
export function recordOutcome(h: InstanceHealth, ok: boolean, now: number, c: OutlierConfig, cluster: { ejected: number; total: number }): number {
  if (ok) {
    h.consecutiveFailures = 0;
    return 0;
  }
  if (isEjected(h, now)) return 0;
  h.consecutiveFailures++;
  if (h.consecutiveFailures < c.consecutiveFailures) return 0;
  const allowed = cluster.ejected === 0 || ((cluster.ejected + 1) / cluster.total) * 100 <= c.maxEjectionPercent;
  if (!allowed) return 0;
  if (h.readmittedAt && now - h.readmittedAt >= c.maxEjectionMs) h.ejections = 0;
  h.ejections++;
  const ms = Math.min(c.baseEjectionMs * h.ejections, c.maxEjectionMs);
  h.ejectedUntil = now + ms;
  h.consecutiveFailures = 0;
  return ms;
}

/**
 * Slow start (Envoy's slow_start_config, linear): an instance that joined or recovered less than
 * windowMs ago gets a share of requests growing from minWeightPercent to a full one over the
 * window, so a cold process (JIT, pools, caches) is not handed a full share at once. 1 = full.
 */
export function slowStartWeight(h: InstanceHealth, now: number, c: SlowStartConfig): number {
  if (c.windowMs <= 0 || h.healthySince === 0) return 1;
  const elapsed = now - h.healthySince;
  if (elapsed >= c.windowMs) return 1;
  return Math.max(c.minWeightPercent / 100, elapsed / c.windowMs);
}
