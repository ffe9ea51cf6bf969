import { BrokenCircuitError, CircuitState, circuitBreaker, ConsecutiveBreaker, handleAll, type CircuitBreakerPolicy } from 'cockatiel';
import { Pool } from 'undici';

export { BrokenCircuitError };

export interface Upstream {
  name: string;
  origin: string;
  pool: Pool;
  /** Per-upstream circuit: opens after consecutive connection failures, timeouts or 5xx. */
  breaker: CircuitBreakerPolicy;
  readonly open: boolean;
}

export interface UpstreamOptions {
  consecutiveFailures: number;
  halfOpenAfterMs: number;
  connectTimeoutMs?: number;
  connections?: number;
  onBreakerChange?: (name: string, open: boolean) => void;
}

/** A connection pool and a circuit breaker (cockatiel) per upstream origin. */
export function createUpstream(name: string, url: string, o: UpstreamOptions): Upstream {
  const origin = new URL(url).origin;
  const pool = new Pool(origin, {
    connections: o.connections ?? 128,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    connect: { timeout: o.connectTimeoutMs ?? 2_000 },
  });
  const breaker = circuitBreaker(
    handleAll.orWhenResult((r) => ((r as { opaque?: { statusCode?: number } } | undefined)?.opaque?.statusCode ?? 0) >= 500),
    { halfOpenAfter: o.halfOpenAfterMs, breaker: new ConsecutiveBreaker(o.consecutiveFailures) },
  );
  breaker.onStateChange((state) => o.onBreakerChange?.(name, state === CircuitState.Open || state === CircuitState.Isolated));
  return {
    name,
    origin,
    pool,
    breaker,
    get open() {
      return breaker.state === CircuitState.Open || breaker.state === CircuitState.Isolated;
    },
  };
}

/** Errors that mean the request never reached the upstream's application (safe to retry elsewhere). */
export function neverReached(err: unknown): boolean {
  if (err instanceof BrokenCircuitError) return true;
  const code = (err as { code?: string }).code;
  return code === 'ECONNREFUSED' || code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'ECONNRESET' || code === 'EHOSTUNREACH' || code === 'ENOTFOUND' || code === 'UND_ERR_SOCKET' || code === 'UND_ERR_HEADERS_TIMEOUT';
}

export function isTimeout(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT';
}
