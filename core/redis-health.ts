import { ReplyError, type Redis, type RedisOptions } from 'ioredis';
import type { Logger } from './logger.ts';

/** The deadlines of strangler.yaml's `redis` section. */
export interface RedisDeadlines {
  commandTimeoutMs: number;
  probeIntervalMs: number;
}

/**
 * ioredis options for a connection the data plane or a service sends commands on: every command
 * has a deadline (a frozen Redis keeps the TCP connection open, so without one a command waits
 * for ever), and none is queued while there is no connection (it fails at once instead).
 * Not for subscriber or blocking (XREADGROUP BLOCK) connections, whose commands wait by design.
 */
export function boundedRedisOptions(r: Pick<RedisDeadlines, 'commandTimeoutMs'>): RedisOptions {
  return {
    commandTimeout: r.commandTimeoutMs,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    connectTimeout: 2_000,
    retryStrategy: (n: number) => Math.min(n * 200, 2_000),
  };
}

/**
 * The deadline of Redis calls off any request path (a service's registry heartbeats, the event
 * relay, an OCR job's enqueue): they only must not wait for ever, and a late answer there costs
 * more than a wait (a retried XADD is published twice), so they get longer than the gateway's
 * request-path deadline: 8× it, at least 2 s.
 */
export function backgroundDeadlineMs(r: Pick<RedisDeadlines, 'commandTimeoutMs'>): number {
  return Math.max(2_000, 8 * r.commandTimeoutMs);
}

/** Resolves true once the connection is ready, false after `ms` (callers go on either way). */
export function redisReady(redis: Redis, ms: number): Promise<boolean> {
  if (redis.status === 'ready') return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      redis.off('ready', onReady);
      resolve(ok);
    };
    const onReady = () => done(true);
    const timer = setTimeout(() => done(false), ms);
    redis.once('ready', onReady);
  });
}

/** What the users of a Redis connection need to know of it (see RedisHealth). */
export interface DependencyHealth {
  /** False while Redis is taken as down: callers do without it rather than wait. A field read, no I/O. */
  readonly ok: boolean;
  /** Why it is not ok, for /readyz and logs; null when ok. */
  readonly reason: string | null;
  /** A command failed: a timeout or a lost connection marks Redis down until a probe answers. */
  failed(err: unknown): void;
  /** Something was done without Redis (a heartbeat skipped, figures held back), counted by `what`. */
  unavailable(what: string): void;
}

/**
 * Whether a Redis connection answers, judged by a PING every probeIntervalMs (with the command
 * deadline) and by the failures its users report. A Redis that hangs is treated like one that is
 * down (DESIGN.md): from the first timeout on, `ok` is false and callers skip it (the rate
 * limiter counts locally, heartbeats are skipped, figures are held back), so nothing waits on
 * it; the first probe it answers makes it ok again, with no restart.
 */
export class RedisHealth implements DependencyHealth {
  #reason: string | null;
  #timer: NodeJS.Timeout | null = null;
  #stopped = false;
  #probing = false;
  #downSince = 0;
  readonly #redis: Redis;
  readonly #o: RedisDeadlines & { logger: Logger; name: string; onUnavailable?: (what: string) => void };
  /** Outages so far, and the last one that ended (ms since the epoch). */
  outages = 0;
  lastOutage: { from: number; to: number; reason: string } | null = null;

  constructor(redis: Redis, options: RedisDeadlines & { logger: Logger; name?: string; onUnavailable?: (what: string) => void }) {
    this.#redis = redis;
    this.#o = { name: 'Redis', ...options };
    this.#reason = redis.status === 'ready' ? null : 'no connection to Redis yet';
    if (this.#reason) this.#downSince = Date.now();
    redis.on('ready', () => void this.probe());
    // A connection its owner closes after stop() is a shutdown, not an outage to warn about.
    redis.on('close', () => {
      if (!this.#stopped) this.#down('the connection to Redis was lost');
    });
  }

  get ok(): boolean {
    return this.#reason === null;
  }

  get reason(): string | null {
    return this.#reason;
  }

  /** Probes now, then every probeIntervalMs. Safe to call twice. */
  start(): void {
    this.#stopped = false;
    if (this.#timer) return;
    void this.probe();
    this.#timer = setInterval(() => void this.probe(), this.#o.probeIntervalMs);
    this.#timer.unref();
  }

  /** Stops probing; what happens to the connection after this (its owner closing it) is not reported. */
  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** One PING within the command deadline: answered → ok, else down with the reason. */
  async probe(): Promise<void> {
    if (this.#probing) return;
    this.#probing = true;
    try {
      if (this.#redis.status !== 'ready') this.#down(`Redis is not ready (connection ${this.#redis.status})`);
      else {
        await this.#redis.ping();
        this.#up();
      }
    } catch (err) {
      this.#down(this.#describe(err));
    } finally {
      this.#probing = false;
    }
  }

  failed(err: unknown): void {
    // An error reply (WRONGTYPE, OOM...) comes from a Redis that answers.
    if (err instanceof ReplyError) return;
    this.#down(this.#describe(err));
  }

  unavailable(what: string): void {
    this.#o.onUnavailable?.(what);
  }

  #describe(err: unknown): string {
    const message = (err as Error)?.message ?? String(err);
    if (message === 'Command timed out') return `Redis did not answer within ${this.#o.commandTimeoutMs} ms`;
    if (/Stream isn't writeable|Connection is closed|max retries per request/i.test(message)) return `Redis is not ready (connection ${this.#redis.status})`;
    return `Redis failed: ${message}`;
  }

  #down(reason: string): void {
    if (this.#reason !== null) return;
    this.#reason = reason;
    this.#downSince = Date.now();
    this.outages++;
    this.#o.logger.warn({ reason }, `${this.#o.name} unavailable (${reason}); going on without it`);
  }

  #up(): void {
    if (this.#reason === null) return;
    const to = Date.now();
    if (this.outages > 0) {
      this.lastOutage = { from: this.#downSince, to, reason: this.#reason };
      this.#o.logger.info({ ms: to - this.#downSince, reason: this.#reason }, `${this.#o.name} answers again after ${to - this.#downSince} ms`);
    }
    this.#reason = null;
  }
}
