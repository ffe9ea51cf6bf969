import { request, type Dispatcher } from 'undici';

/**
 * An upstream's health check (legacy's or a service's), as strangler.yaml resolves it: the
 * gateway's active checks and the cutover preflight ask with these same settings, through
 * `probeHealth`, so an instance the gateway routes to is one the preflight passes and back.
 */
export interface ResolvedHealthCheck {
  /** false: the instance is never asked and counts as healthy (passive outlier detection still applies). */
  enabled: boolean;
  path: string;
  /** The statuses of a healthy answer: one (200), a range ("200-399") or a class ("2xx"). */
  expect: number | string;
  intervalMs: number;
  timeoutMs: number;
  healthyThreshold: number;
  unhealthyThreshold: number;
}

/** Sent with every health check of a gateway, so an instance (or a test) can tell them from traffic. */
export const HEALTH_CHECK_USER_AGENT = 'strangler-health-check';
/** Sent by a cutover's preflight (same path and expectations, another asker: its logs tell them apart). */
export const PREFLIGHT_USER_AGENT = 'strangler-preflight';

export interface HealthObservation {
  ok: boolean;
  status?: number;
  latencyMs?: number;
  error?: string;
}

/** Pure: the inclusive status range an `expect` setting stands for. */
export function expectedRange(expect: number | string): [number, number] {
  if (typeof expect === 'number') return [expect, expect];
  const cls = /^([1-5])xx$/.exec(expect);
  if (cls) return [Number(cls[1]) * 100, Number(cls[1]) * 100 + 99];
  const [from, to = from] = expect.split('-').map(Number);
  return [from, to];
}

/** Pure: whether an answer's status means healthy. */
export function isExpectedStatus(status: number, expect: number | string): boolean {
  const [from, to] = expectedRange(expect);
  return status >= from && status <= to;
}

/** Pure: where a check asks, for messages: `http://host:port/path`. */
export function healthCheckUrl(url: string, hc: Pick<ResolvedHealthCheck, 'path'>): string {
  return new URL(hc.path, new URL(url).origin).toString();
}

/**
 * Asks one instance, as configured: GET its origin + path, healthy when the status is expected
 * and it answers within timeoutMs. `dispatcher`: the gateway's connection pool of the instance.
 * A disabled check is not asked and passes.
 */
export async function probeHealth(url: string, hc: ResolvedHealthCheck, dispatcher?: Dispatcher, userAgent = HEALTH_CHECK_USER_AGENT): Promise<HealthObservation> {
  if (!hc.enabled) return { ok: true };
  const started = Date.now();
  try {
    const res = await request(healthCheckUrl(url, hc), {
      method: 'GET',
      headers: { 'user-agent': userAgent },
      headersTimeout: hc.timeoutMs,
      bodyTimeout: hc.timeoutMs,
      signal: AbortSignal.timeout(hc.timeoutMs),
      ...(dispatcher ? { dispatcher } : {}),
    });
    await res.body.dump();
    return { ok: isExpectedStatus(res.statusCode, hc.expect), status: res.statusCode, latencyMs: Date.now() - started };
  } catch (err) {
    const e = err as Error & { code?: string };
    return { ok: false, error: e.name === 'TimeoutError' || e.code === 'UND_ERR_HEADERS_TIMEOUT' ? `no answer within ${hc.timeoutMs} ms` : (e.code ?? e.message) };
  }
}
