import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import type { Redis } from 'ioredis';
import { withDeadline } from '../core/deadline.ts';
import type { Logger } from '../core/logger.ts';
import type { DependencyHealth } from '../core/redis-health.ts';
import type { RedisKeys } from './redis-keys.ts';
import type { RouteStore } from './route-store.ts';
import { liftLapsedFences, type RouteSource, type RouteTable } from './route-types.ts';

export interface LiveRouteStateOptions {
  instanceId: string;
  store: RouteStore;
  /** Commands (heartbeat, ack); `subscriber` is a second connection in subscriber mode. */
  redis: Redis;
  subscriber: Redis;
  keys: RedisKeys;
  snapshotFile: string;
  pollIntervalMs: number;
  heartbeatIntervalMs: number;
  logger: Logger;
  /** The gateway's zone (zone-aware routing), published with its heartbeat. */
  zone?: string;
  /** Redis (`redis`) as the gateway sees it: heartbeats are skipped, not queued, while it is unavailable. */
  health?: DependencyHealth & { lastOutage?: { from: number; to: number; reason: string } | null };
  /**
   * Runs before a newly applied table is acknowledged (the gateway drains in-flight writes to a
   * prefix the table fences): the acknowledgement means "no write of the old routing is left".
   */
  beforeAck?: (table: RouteTable) => Promise<void>;
  /**
   * When beforeAck is how the table reaches the data plane (the HAProxy engine's agent applies it
   * through the Runtime API), a failed beforeAck means the table is not served: no acknowledgement.
   */
  beforeAckRequired?: boolean;
  /** The data plane engine, published with the heartbeat (`node` unless said). */
  engine?: 'node' | 'haproxy';
}

type State = 'created' | 'active' | 'stopping' | 'stopped';

/**
 * Pure: a table read from a snapshot file. The control database gives every canary its hash, so a
 * canary without one was written by a version from before the hash was recorded, when every
 * canary used fnv1a: it keeps it (a gateway booting from an old snapshot moves no canary user).
 */
export function snapshotTable(table: RouteTable): RouteTable {
  return { version: table.version, routes: table.routes.map((r) => (r.mode === 'canary' && !r.canaryHash ? { ...r, canaryHash: 'fnv1a' as const } : r)) };
}

/** Longest wait for a (un)subscription, whose connection has no command deadline. */
const REDIS_WAIT_MS = 2_000;

/**
 * The gateway's view of the route table. A new version is loaded whole and swapped in with one
 * assignment, so a request sees either the old table or the new one, never half of each.
 * Notifications come through Redis pub/sub; a poll of the version catches any that were lost;
 * the applied version is acknowledged in Redis under the instance id; every applied table is
 * written to a snapshot file, the table a gateway boots from when the control DB is down.
 */
export class LiveRouteState implements RouteSource {
  #table: RouteTable | null = null;
  #degraded = false;
  #state: State = 'created';
  #timers: NodeJS.Timeout[] = [];
  #refreshing: Promise<void> | null = null;
  #storeReachable = false;
  #ackedVersion = -1;
  #listeners: Array<(table: RouteTable) => void> = [];
  #leaseTimer: NodeJS.Timeout | null = null;
  readonly #o: LiveRouteStateOptions;
  readonly #startedAt = new Date().toISOString();

  constructor(options: LiveRouteStateOptions) {
    this.#o = options;
  }

  get degraded(): boolean {
    return this.#degraded;
  }

  get loaded(): boolean {
    return this.#table !== null;
  }

  get storeReachable(): boolean {
    return this.#storeReachable;
  }

  /** Called with each table as it is applied (the gateway releases held writes with it). */
  onApply(listener: (table: RouteTable) => void): void {
    this.#listeners.push(listener);
  }

  /** Lets the gateway set its drain step once it exists (it is built after the state). */
  setBeforeAck(hook: (table: RouteTable) => Promise<void>): void {
    this.#o.beforeAck = hook;
  }

  current(): RouteTable {
    if (!this.#table) throw new Error('no route table loaded yet');
    return this.#table;
  }

  /** Loads the table (control DB, else the snapshot), then follows changes. Safe to call twice. */
  async start(): Promise<void> {
    if (this.#state !== 'created') return;
    this.#state = 'active';
    try {
      this.#apply(await this.#o.store.load(), false);
      this.#storeReachable = true;
    } catch (err) {
      const snapshot = this.#readSnapshot();
      if (snapshot) {
        this.#o.logger.warn({ err, version: snapshot.version, file: this.#o.snapshotFile }, 'control database unreachable; serving the route snapshot (degraded)');
        this.#apply(snapshot, true);
      } else {
        this.#o.logger.error({ err }, 'control database unreachable and no route snapshot; not ready until the control database answers');
      }
    }
    const { subscriber, keys } = this.#o;
    subscriber.on('message', (channel, message) => {
      if (channel !== keys.routesChanged) return;
      const version = Number(message);
      if (!this.#table || this.#degraded || version > this.#table.version) void this.refresh();
    });
    // ioredis re-subscribes after a reconnect; a refresh then covers what was missed meanwhile.
    subscriber.on('ready', () => void this.refresh());
    // Bounded: a frozen Redis never answers, and the subscription completes whenever it does.
    await withDeadline(subscriber.subscribe(keys.routesChanged), REDIS_WAIT_MS, 'Redis (SUBSCRIBE)').catch((err) => this.#o.logger.warn({ err }, 'cannot subscribe to route notifications yet; polling'));
    this.#timers.push(setInterval(() => void this.#poll(), this.#o.pollIntervalMs));
    this.#timers.push(setInterval(() => void this.heartbeat(), this.#o.heartbeatIntervalMs));
    for (const t of this.#timers) t.unref();
    await this.heartbeat();
  }

  /** Loads the table if the control DB has a newer version (or we run degraded). Coalesces calls. */
  refresh(): Promise<void> {
    this.#refreshing ??= (async () => {
      try {
        const table = await this.#o.store.load();
        this.#storeReachable = true;
        if (!this.#table || this.#degraded || table.version > this.#table.version) this.#apply(table, false);
      } catch (err) {
        if (this.#storeReachable) this.#o.logger.warn({ err }, 'control database unreachable; keeping route table version %s', this.#table?.version);
        this.#storeReachable = false;
      } finally {
        this.#refreshing = null;
      }
    })();
    return this.#refreshing;
  }

  async #poll(): Promise<void> {
    if (this.#state !== 'active') return;
    try {
      const version = await this.#o.store.version();
      this.#storeReachable = true;
      if (!this.#table || this.#degraded || version > this.#table.version) await this.refresh();
    } catch {
      this.#storeReachable = false;
    }
  }

  #apply(loaded: RouteTable, fromSnapshot: boolean): void {
    const table = liftLapsedFences(loaded, Date.now());
    if (table !== loaded) this.#o.logger.warn({ version: table.version }, 'a write hold outlived its lease (its owner did not lift it); lifted, following the last committed route');
    const frozen: RouteTable = Object.freeze({ version: table.version, routes: Object.freeze([...table.routes]) });
    this.#table = frozen; // the one assignment requests observe
    this.#degraded = fromSnapshot;
    this.#o.logger.info({ version: frozen.version, routes: frozen.routes.length, degraded: fromSnapshot }, 'route table applied');
    if (!fromSnapshot) this.#writeSnapshot(frozen);
    for (const listener of this.#listeners) listener(frozen);
    void this.#acknowledge(frozen);
    this.#watchLeases(frozen);
  }

  /**
   * A fence lifts itself when its lease runs out, with no new version (its owner may be dead):
   * the table is applied again without it, which releases the held writes to the route it kept.
   */
  #watchLeases(table: RouteTable): void {
    if (this.#leaseTimer) clearTimeout(this.#leaseTimer);
    this.#leaseTimer = null;
    const until = Math.min(...table.routes.filter((r) => r.fenced && r.fenceUntil !== undefined).map((r) => r.fenceUntil!));
    if (!Number.isFinite(until)) return;
    this.#leaseTimer = setTimeout(() => {
      this.#leaseTimer = null;
      if (this.#table === table && this.#state === 'active') this.#apply(table, this.#degraded);
    }, Math.max(0, until - Date.now()) + 1);
    this.#leaseTimer.unref();
  }

  async #acknowledge(table: RouteTable): Promise<void> {
    try {
      await this.#o.beforeAck?.(table);
    } catch (err) {
      if (this.#o.beforeAckRequired) {
        this.#o.logger.error({ err, version: table.version }, 'the route table could not be applied to the data plane; not acknowledged');
        return;
      }
      this.#o.logger.warn({ err, version: table.version }, 'draining before the acknowledgement failed; acknowledging anyway');
    }
    if (table.version > this.#ackedVersion) this.#ackedVersion = table.version;
    await this.heartbeat();
  }

  /** Publishes this instance's applied version (the acknowledgement the control plane waits for). */
  async heartbeat(): Promise<void> {
    if (this.#state !== 'active') return;
    const { redis, keys, instanceId, heartbeatIntervalMs, health } = this.#o;
    // Skipped, not queued: the next one after Redis is back carries the current state.
    if (health && !health.ok) return health.unavailable('heartbeat');
    const now = Date.now();
    try {
      await redis
        .multi()
        .hset(keys.gateway(instanceId), {
          version: String(this.#ackedVersion),
          degraded: this.#degraded ? '1' : '0',
          pid: String(process.pid),
          host: hostname(),
          startedAt: this.#startedAt,
          heartbeatAt: String(now),
          zone: this.#o.zone ?? '',
          engine: this.#o.engine ?? 'node',
          degradedReason: this.#degradedReason(now),
        })
        .pexpire(keys.gateway(instanceId), heartbeatIntervalMs * 5)
        .zadd(keys.gateways, now, instanceId)
        .exec();
    } catch (err) {
      // Redis down: the gateway keeps serving; the control plane will see it as not live.
      health?.failed(err);
    }
  }

  /** Why this gateway is degraded, or was until less than a minute ago (a Redis outage), for its heartbeat. */
  #degradedReason(now: number): string {
    const reasons: string[] = [];
    if (this.#degraded) reasons.push('serving the route snapshot (control database unreachable)');
    else if (!this.#storeReachable) reasons.push('control database unreachable');
    const outage = this.#o.health?.lastOutage;
    if (outage && now - outage.to < 60_000) reasons.push(`Redis was unavailable for ${((outage.to - outage.from) / 1000).toFixed(1)} s until ${new Date(outage.to).toISOString()} (${outage.reason})`);
    return reasons.join('; ');
  }

  #readSnapshot(): RouteTable | null {
    try {
      const parsed = JSON.parse(readFileSync(this.#o.snapshotFile, 'utf8')) as RouteTable;
      if (typeof parsed.version !== 'number' || !Array.isArray(parsed.routes)) return null;
      return snapshotTable(parsed);
    } catch {
      return null;
    }
  }

  #writeSnapshot(table: RouteTable): void {
    try {
      mkdirSync(dirname(this.#o.snapshotFile), { recursive: true });
      const tmp = `${this.#o.snapshotFile}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify({ ...table, savedAt: new Date().toISOString() }));
      renameSync(tmp, this.#o.snapshotFile); // atomic: a crash never leaves half a snapshot
    } catch (err) {
      this.#o.logger.warn({ err, file: this.#o.snapshotFile }, 'cannot write the route snapshot');
    }
  }

  /** Stops following changes and withdraws this instance from the live set. Safe to call twice. */
  async stop(): Promise<void> {
    if (this.#state !== 'active') {
      this.#state = 'stopped';
      return;
    }
    this.#state = 'stopping';
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    if (this.#leaseTimer) clearTimeout(this.#leaseTimer);
    const { redis, subscriber, keys, instanceId } = this.#o;
    await withDeadline(subscriber.unsubscribe(keys.routesChanged), REDIS_WAIT_MS, 'Redis (UNSUBSCRIBE)').catch(() => undefined);
    await redis.multi().del(keys.gateway(instanceId)).zrem(keys.gateways, instanceId).exec().catch(() => undefined);
    this.#state = 'stopped';
  }
}
