/**
 * Domain events between services, on Redis Streams.
 *
 * Publishing is a transactional outbox: a handler writes the event into `event_outbox` in the
 * same transaction as the change it announces, so an event exists exactly when its change
 * committed. A relay moves outbox rows to the service's stream (`<prefix>events:<service>`) and
 * marks them published; a crash between the XADD and the mark publishes a row twice, which the
 * consumer's dedupe absorbs.
 *
 * Consuming uses a consumer group: each event goes to one consumer of the group; the effect and
 * the event id are written in one transaction (`event_processed`), and the entry is acknowledged
 * only after that commit. A consumer that dies keeps its entries pending; they are re-read when it
 * restarts under the same name, or claimed by another consumer once idle for `claimIdleMs`. Either
 * way the event id is already recorded if the effect committed, so an event takes effect once.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import type { Knex } from 'knex';
import type { Logger } from '../../../../core/logger.ts';

export const EVENT_TYPES = ['invoice.created', 'invoice.paid', 'ocr.completed'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export interface DomainEvent {
  /** Unique per event (the dedupe key): a UUID chosen when the change committed. */
  id: string;
  type: EventType;
  /** The service that published it. */
  source: string;
  occurredAt: string;
  userId: number;
  data: Record<string, unknown>;
}

/** Which services publish events, and so which streams exist. */
export const EVENT_SOURCES = ['invoices', 'ocr'] as const;

export const OUTBOX_TABLE = 'event_outbox';
export const PROCESSED_TABLE = 'event_processed';

export const eventStream = (keyPrefix: string, source: string) => `${keyPrefix}events:${source}`;
/** Entries no consumer can process (unreadable, or failing after maxDeliveries), with the reason. */
export const deadLetterStream = (keyPrefix: string) => `${keyPrefix}events:dead`;

export const OUTBOX_DDL = `CREATE TABLE IF NOT EXISTS ${OUTBOX_TABLE} (
  id bigserial PRIMARY KEY, event_id uuid NOT NULL UNIQUE, type text NOT NULL, user_id integer NOT NULL, data jsonb NOT NULL,
  occurred_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz);
  CREATE INDEX IF NOT EXISTS ${OUTBOX_TABLE}_unpublished_idx ON ${OUTBOX_TABLE} (id) WHERE published_at IS NULL`;

export const PROCESSED_DDL = `CREATE TABLE IF NOT EXISTS ${PROCESSED_TABLE} (
  event_id uuid PRIMARY KEY, type text NOT NULL, stream text NOT NULL, entry_id text NOT NULL, processed_at timestamptz NOT NULL DEFAULT now())`;

/** What a handler uses to announce a change, inside the transaction that makes it. */
export interface EventRecorder {
  record(trx: Knex.Transaction, type: EventType, userId: number, data: Record<string, unknown>): Promise<void>;
}

export const outboxRecorder: EventRecorder = {
  async record(trx, type, userId, data) {
    await trx(OUTBOX_TABLE).insert({ event_id: randomUUID(), type, user_id: userId, data: JSON.stringify(data) });
  },
};

interface OutboxRow {
  id: string;
  event_id: string;
  type: EventType;
  user_id: number;
  data: Record<string, unknown>;
  occurred_at: Date;
}

export interface OutboxRelayOptions {
  db: Knex;
  redis: Redis;
  keyPrefix: string;
  /** The publishing service: names the stream and the events' `source`. */
  source: string;
  logger: Logger;
  /** Poll interval when the outbox is empty. */
  intervalMs?: number;
  batch?: number;
  /** Approximate length the stream is trimmed to (consumers that fall further behind lose entries). */
  maxLen?: number;
  /** Published rows are deleted after this long. */
  retainMs?: number;
}

export interface OutboxRelay {
  /** Publishes what is pending now (tests, shutdown); resolves with the number published. */
  flush(): Promise<number>;
  stats(): { published: number; errors: number; lastError?: string };
  stop(): Promise<void>;
}

/**
 * Moves committed outbox rows to the stream, in commit-id order. One relay at a time per
 * database (a transaction-level advisory lock), so several service instances can each run one
 * and events still leave in order.
 */
export function startOutboxRelay(options: OutboxRelayOptions): OutboxRelay {
  const { db, redis, logger } = options;
  const stream = eventStream(options.keyPrefix, options.source);
  const intervalMs = options.intervalMs ?? 100;
  const batch = options.batch ?? 200;
  const maxLen = options.maxLen ?? 100_000;
  const retainMs = options.retainMs ?? 24 * 3600_000;
  const figures = { published: 0, errors: 0, lastError: undefined as string | undefined };
  let stopped = false;
  let lastPurge = 0;
  let wake: (() => void) | undefined;

  const relayBatch = () =>
    db.transaction(async (trx) => {
      const { rows: [lock] } = await trx.raw(`SELECT pg_try_advisory_xact_lock(hashtext(?)) AS got`, [OUTBOX_TABLE]);
      if (!lock.got) return 0;
      const rows: OutboxRow[] = await trx(OUTBOX_TABLE).whereNull('published_at').orderBy('id').limit(batch);
      if (!rows.length) return 0;
      const multi = redis.multi();
      for (const row of rows) {
        const event: DomainEvent = { id: row.event_id, type: row.type, source: options.source, occurredAt: row.occurred_at.toISOString(), userId: row.user_id, data: row.data };
        multi.xadd(stream, 'MAXLEN', '~', String(maxLen), '*', 'event', JSON.stringify(event));
      }
      const replies = await multi.exec();
      const failed = replies?.find(([err]) => err);
      if (!replies || failed) throw failed?.[0] ?? new Error('the XADD transaction was discarded');
      await trx(OUTBOX_TABLE).whereIn('id', rows.map((r) => r.id)).update({ published_at: trx.fn.now() });
      return rows.length;
    });

  let redisFailing = false;
  const flush = async () => {
    // After a failure, ask Redis first, outside the transaction: a Redis that hangs would
    // otherwise receive every retried batch and apply them all once it resumes (duplicates the
    // consumers absorb, but a stream full of them).
    if (redisFailing) {
      await redis.ping();
      redisFailing = false;
    }
    let total = 0;
    for (let n = batch; n === batch; total += n) n = await relayBatch();
    figures.published += total;
    if (Date.now() - lastPurge > 60_000) {
      lastPurge = Date.now();
      await db(OUTBOX_TABLE).whereNotNull('published_at').andWhere('published_at', '<', new Date(Date.now() - retainMs)).delete();
    }
    return total;
  };

  const loop = (async () => {
    while (!stopped) {
      let pause = intervalMs;
      try {
        await flush();
      } catch (err) {
        figures.errors++;
        figures.lastError = (err as Error).message;
        redisFailing = true;
        // Redis or the database is away: the rows stay in the outbox and leave when it is back.
        logger.warn({ err, stream }, 'event relay: publishing failed; retrying');
        pause = 1_000;
      }
      if (!stopped) await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, pause);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  })();

  return {
    flush,
    stats: () => ({ ...figures }),
    async stop() {
      stopped = true;
      wake?.();
      await loop;
    },
  };
}

export interface EventConsumerOptions {
  /** A connection of its own: XREADGROUP BLOCK holds it. */
  redis: Redis;
  db: Knex;
  keyPrefix: string;
  /** The publishing services to read (their streams). */
  sources: readonly string[];
  group: string;
  /** Stable across restarts of one instance, so its pending entries are re-read at start. */
  consumer?: string;
  /** The effect of an event, in the transaction that records it as processed. */
  handle(trx: Knex.Transaction, event: DomainEvent): Promise<void>;
  logger: Logger;
  /** A pending entry idle this long (its consumer died, or its handling failed) is claimed. */
  claimIdleMs?: number;
  blockMs?: number;
  /** After this many deliveries an entry goes to the dead-letter stream. */
  maxDeliveries?: number;
}

export interface EventConsumer {
  stats(): { processed: number; duplicates: number; failed: number; deadLettered: number };
  stop(): Promise<void>;
}

type StreamEntry = [id: string, fields: string[]];

/** Reads the group's streams and applies each event once (see the file comment). */
export async function startEventConsumer(options: EventConsumerOptions): Promise<EventConsumer> {
  const { redis, db, logger, group } = options;
  const consumer = options.consumer ?? `${group}-${hostname()}-${process.pid}`;
  const streams = options.sources.map((s) => eventStream(options.keyPrefix, s));
  const claimIdleMs = options.claimIdleMs ?? 30_000;
  const blockMs = options.blockMs ?? 1_000;
  const maxDeliveries = options.maxDeliveries ?? 5;
  const figures = { processed: 0, duplicates: 0, failed: 0, deadLettered: 0 };

  const createGroups = async () => {
    for (const stream of streams) {
      try {
        // From the beginning of the stream: events published before the group existed count too.
        await redis.xgroup('CREATE', stream, group, '0', 'MKSTREAM');
      } catch (err) {
        if (!String((err as Error).message).includes('BUSYGROUP')) throw err;
      }
    }
  };

  const deadLetter = async (stream: string, id: string, fields: string[], reason: string) => {
    await redis.xadd(deadLetterStream(options.keyPrefix), '*', 'stream', stream, 'entry', id, 'group', group, 'reason', reason, ...fields);
    await redis.xack(stream, group, id);
    figures.deadLettered++;
    logger.error({ stream, entry: id, reason }, 'event moved to the dead-letter stream');
  };

  const process1 = async (stream: string, [id, fields]: StreamEntry): Promise<void> => {
    const raw = fields[fields.indexOf('event') + 1];
    let event: DomainEvent;
    try {
      event = JSON.parse(raw ?? '');
      if (typeof event.id !== 'string' || !EVENT_TYPES.includes(event.type) || !Number.isInteger(event.userId)) throw new Error('missing id, type or userId');
    } catch (err) {
      return deadLetter(stream, id, fields, `unreadable event: ${(err as Error).message}`);
    }
    try {
      const fresh = await db.transaction(async (trx) => {
        const inserted = await trx(PROCESSED_TABLE).insert({ event_id: event.id, type: event.type, stream, entry_id: id }).onConflict('event_id').ignore().returning('event_id');
        if (!inserted.length) return false;
        await options.handle(trx, event);
        return true;
      });
      if (fresh) figures.processed++;
      else figures.duplicates++;
      await redis.xack(stream, group, id);
    } catch (err) {
      // Not acknowledged: it stays pending and is claimed again after claimIdleMs.
      figures.failed++;
      logger.warn({ err, stream, entry: id, event: event.id }, 'event handling failed; it will be retried');
    }
  };

  /** Entries pending for this consumer name: left by its previous life, re-read at start. */
  const drainOwnPending = async () => {
    for (const stream of streams) {
      for (;;) {
        const reply = (await redis.xreadgroup('GROUP', group, consumer, 'COUNT', 100, 'STREAMS', stream, '0')) as [string, StreamEntry[]][] | null;
        const entries = reply?.[0]?.[1] ?? [];
        if (!entries.length) break;
        for (const entry of entries) await process1(stream, entry);
        if (figures.failed) break;
      }
    }
  };

  /** Entries another consumer (or this one) left pending too long: take them over. */
  const claimIdle = async () => {
    for (const stream of streams) {
      let cursor = '0-0';
      do {
        const [next, entries] = (await redis.xautoclaim(stream, group, consumer, claimIdleMs, cursor, 'COUNT', 100)) as [string, (StreamEntry | null)[]];
        cursor = next;
        for (const entry of entries) {
          if (!entry) continue;
          const pending = (await redis.xpending(stream, group, entry[0], entry[0], 1)) as [string, string, number, number][];
          const deliveries = pending[0]?.[3] ?? 0;
          if (deliveries > maxDeliveries) await deadLetter(stream, entry[0], entry[1], `failed ${deliveries - 1} times`);
          else await process1(stream, entry);
        }
      } while (cursor !== '0-0' && !stopped);
    }
  };

  let stopped = false;
  let prepared = false;
  const prepare = async () => {
    await createGroups();
    await drainOwnPending();
    prepared = true;
  };
  // Prepared now if Redis answers, else by the loop once it does (a consumer starts without it).
  await prepare().catch((err) => logger.warn({ err }, 'event consumer: Redis not available yet; will start reading once it answers'));
  const loop = (async () => {
    let nextClaim = 0;
    while (!stopped) {
      try {
        if (!prepared) await prepare();
        if (Date.now() >= nextClaim) {
          await claimIdle();
          nextClaim = Date.now() + Math.min(claimIdleMs, 5_000);
        }
        const reply = (await redis.xreadgroup('GROUP', group, consumer, 'COUNT', 100, 'BLOCK', blockMs, 'STREAMS', ...streams, ...streams.map(() => '>'))) as [string, StreamEntry[]][] | null;
        for (const [stream, entries] of reply ?? []) for (const entry of entries) await process1(stream, entry);
      } catch (err) {
        if (stopped) break;
        logger.warn({ err }, 'event consumer: reading failed; retrying');
        await new Promise((r) => setTimeout(r, 1_000));
      }
    }
  })();

  return {
    stats: () => ({ ...figures }),
    async stop() {
      stopped = true;
      await loop;
    },
  };
}
