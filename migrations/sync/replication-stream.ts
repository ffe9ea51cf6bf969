import type pg from 'pg';
import { syncClient } from './connect.ts';
import { bigIntToLsn, lsnToBigInt } from './lsn.ts';
import { PG_EPOCH_US, PgoutputDecoder, type Pgoutput } from './pgoutput.ts';

/**
 * One decoded message, or a keepalive: the server has sent everything up to
 * `lsn`. A consumer that has applied every transaction it
 * received when it reaches a keepalive may acknowledge its position (nothing before it is
 * left to apply), as PostgreSQL's own apply worker does; the slot then keeps no WAL that
 * holds nothing for this pipeline, and a server shutting down sees its walsender caught up.
 */
export type StreamItem = Pgoutput.Message | Keepalive;

export interface Keepalive {
  tag: 'keepalive';
  lsn: string;
}

export interface ReplicationStreamOptions {
  url: string;
  slot: string;
  publication: string;
  /** Where to start: the end of the last applied commit (the slot resends from there). */
  startLsn: string;
  /** Decoded messages buffered before the socket is paused (the walsender then waits). */
  highWater?: number;
  /** Status updates at least this often, so the server never times the connection out. */
  statusIntervalMs?: number;
  /** Opening the replication connection. */
  connectTimeoutMs?: number;
  /**
   * Silence past which the source is taken as hung: a ping (a status update asking for an
   * answer) goes out half-way; nothing by the end ends the stream with an error.
   */
  receiveTimeoutMs?: number;
}

/** Microseconds since 2000-01-01, the epoch of the replication protocol's timestamps. */
function protocolNow(): bigint {
  return BigInt(Date.now()) * 1000n - PG_EPOCH_US;
}

/**
 * A pgoutput stream on its own replication connection (the protocol of START_REPLICATION,
 * read from pg-logical-replication, which this and pgoutput.ts replace).
 *
 * Why not the library's LogicalReplicationService: its acknowledge(lsn) reports lsn + 1 as
 * written, flushed and applied. Acknowledging the end of the last applied commit that way
 * moves the slot one byte past the start of the next commit record whenever commits are
 * adjacent in the WAL (back-to-back commits of concurrent sessions), and PostgreSQL then skips
 * that transaction on the next start ("has been already streamed, forwarding to"): a lost
 * transaction. Here the position reported is exactly the one given, and only when given.
 *
 * Messages are buffered for the consumer (receiving goes on while it applies) up to
 * `highWater`, beyond which the socket is paused until the consumer has caught up.
 */
export class ReplicationStream {
  readonly #o: Required<ReplicationStreamOptions>;
  readonly #decoder = new PgoutputDecoder();
  #client: pg.Client | null = null;
  #queue: StreamItem[] = [];
  #head = 0;
  #paused = false;
  #waiting: ((ok: boolean) => void) | null = null;
  #ended = false;
  #error: Error | null = null;
  #acknowledged: string;
  #timer: NodeJS.Timeout | null = null;
  #watchdog: NodeJS.Timeout | null = null;
  /** When the server was last heard from. */
  #heard = Date.now();

  constructor(options: ReplicationStreamOptions) {
    this.#o = { highWater: 20_000, statusIntervalMs: 10_000, connectTimeoutMs: 10_000, receiveTimeoutMs: 15_000, ...options };
    this.#acknowledged = options.startLsn;
  }

  /** Connects and starts streaming; rejects when the server refuses (slot busy, missing publication). */
  async start(): Promise<void> {
    const client = syncClient(this.#o.url, { connectTimeoutMs: this.#o.connectTimeoutMs }, { longRunning: true, replication: true });
    this.#client = client;
    client.on('error', (err) => this.#end(err));
    await client.connect();
    const connection = (client as unknown as { connection: PgConnection }).connection;
    connection.on('copyData', ({ chunk }: { chunk: Buffer }) => this.#onData(chunk));
    const publication = this.#o.publication.replace(/'/g, "''").replace(/"/g, '""');
    const started = new Promise<void>((ok, fail) => {
      connection.once('replicationStart', () => ok());
      client
        .query(`START_REPLICATION SLOT "${this.#o.slot.replace(/"/g, '""')}" LOGICAL ${this.#o.startLsn} (proto_version '1', publication_names '"${publication}"', messages 'true')`)
        .then(() => this.#end(new Error('the replication stream ended')), (err: Error) => (this.#end(err), fail(err)));
    });
    await started;
    this.#heard = Date.now();
    this.#timer = setInterval(() => this.#sendStatus(false), this.#o.statusIntervalMs);
    this.#timer.unref();
    // A source that hangs keeps the connection open and says nothing: ask half-way, give up at the end.
    let pinged = false;
    this.#watchdog = setInterval(() => {
      const silent = Date.now() - this.#heard;
      if (silent < this.#o.receiveTimeoutMs / 2) pinged = false;
      else if (silent >= this.#o.receiveTimeoutMs) this.#end(new Error(`the source sent nothing for ${(silent / 1000).toFixed(1)} s, not even an answer to a ping (sync.receiveTimeoutMs): taken as hung`));
      else if (!pinged) {
        pinged = true;
        this.#sendStatus(true);
      }
    }, Math.max(50, Math.floor(this.#o.receiveTimeoutMs / 10)));
    this.#watchdog.unref();
  }

  #onData(chunk: Buffer): void {
    this.#heard = Date.now();
    if (chunk[0] === 0x77) {
      // XLogData: 'w', start LSN, end LSN, send time, then one pgoutput message (whose commit
      // messages carry the LSNs the worker needs).
      let message: Pgoutput.Message;
      try {
        message = this.#decoder.decode(chunk, 25);
      } catch (err) {
        this.#end(err as Error);
        return;
      }
      this.#queue.push(message);
      if (!this.#paused && this.#queue.length - this.#head >= this.#o.highWater) {
        this.#paused = true;
        this.#socket()?.pause();
      }
      this.#wake(true);
    } else if (chunk[0] === 0x6b) {
      // Primary keepalive: 'k', the server's send position, its clock, whether it wants an
      // answer. The answer is what is applied, nothing more; the consumer sees the position
      // in order with the messages before it.
      const position = chunk.readBigUInt64BE(1);
      this.#queue.push({ tag: 'keepalive', lsn: bigIntToLsn(position) });
      if (chunk[17] === 1) this.#sendStatus(false);
      this.#wake(true);
    }
  }

  /** The next message, waiting for one; null once the stream has ended (see `error`). */
  async next(): Promise<StreamItem | null> {
    for (;;) {
      const item = this.take();
      if (item) return item;
      if (this.#ended) return null;
      if (!(await new Promise<boolean>((ok) => (this.#waiting = ok)))) return this.take() ?? null;
    }
  }

  /**
   * The next buffered message, without waiting (undefined when none is buffered): the
   * consumer's fast path, one promise fewer for every message of a busy stream.
   */
  take(): StreamItem | undefined {
    if (this.#head >= this.#queue.length) return undefined;
    const item = this.#queue[this.#head++];
    if (this.#head > 4096 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    if (this.#paused && this.#queue.length - this.#head < this.#o.highWater / 2) {
      this.#paused = false;
      this.#socket()?.resume();
    }
    return item;
  }

  /** Whether a decoded message (not a keepalive) is next in the buffer: the consumer may go on without waiting on the network. */
  get hasBuffered(): boolean {
    return this.#head < this.#queue.length && this.#queue[this.#head].tag !== 'keepalive';
  }

  /** Why the stream ended, when it ended on an error. */
  get error(): Error | null {
    return this.#error;
  }

  /**
   * Tells the server everything up to `lsn` is durably applied: the slot may forget it and
   * a restart resumes exactly there. Never call it with more than what is committed.
   */
  acknowledge(lsn: string): void {
    if (lsnToBigInt(lsn) < lsnToBigInt(this.#acknowledged)) return;
    this.#acknowledged = lsn;
    this.#sendStatus(false);
  }

  #sendStatus(ping: boolean): void {
    const connection = this.#client && (this.#client as unknown as { connection: PgConnection }).connection;
    if (!connection || this.#ended) return;
    const position = lsnToBigInt(this.#acknowledged);
    const message = Buffer.alloc(34);
    message[0] = 0x72; // 'r': standby status update
    message.writeBigUInt64BE(position, 1); // written
    message.writeBigUInt64BE(position, 9); // flushed
    message.writeBigUInt64BE(position, 17); // applied
    message.writeBigInt64BE(protocolNow(), 25);
    message[33] = ping ? 1 : 0;
    connection.sendCopyFromChunk(message);
  }

  #socket(): { pause(): void; resume(): void } | undefined {
    return (this.#client as unknown as { connection?: PgConnection } | null)?.connection?.stream;
  }

  #wake(value: boolean): void {
    const waiting = this.#waiting;
    this.#waiting = null;
    waiting?.(value);
  }

  #end(err: Error | null): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = err;
    if (this.#timer) clearInterval(this.#timer);
    if (this.#watchdog) clearInterval(this.#watchdog);
    this.#wake(false);
  }

  /** Closes the connection; buffered messages are dropped (they will be sent again). */
  async close(): Promise<void> {
    this.#end(null);
    this.#queue = [];
    this.#head = 0;
    const client = this.#client;
    this.#client = null;
    await client?.end().catch(() => undefined);
  }
}

interface PgConnection {
  on(event: string, fn: (msg: { chunk: Buffer }) => void): void;
  once(event: string, fn: () => void): void;
  sendCopyFromChunk(chunk: Buffer): void;
  stream?: { pause(): void; resume(): void };
}
