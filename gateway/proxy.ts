import type { IncomingMessage, ServerResponse } from 'node:http';
import { Transform, type Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { StranglerError } from '../core/errors.ts';
import { downstreamHeaders, downstreamTrailers } from './headers.ts';
import type { CapturedResponse } from './shadow.ts';
import type { Endpoint } from './upstreams.ts';

/** A request body: none, the live stream (with a size guard), or bytes already read (replayable). */
export type Body = null | Readable | Buffer;

/** A stream that fails with 413 once more than `limit` bytes have passed. */
export function limitBody(req: IncomingMessage, limit: number): Readable {
  let seen = 0;
  const guard = new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length;
      if (seen > limit) return done(new StranglerError(`the request body is larger than ${limit} bytes`, 'PAYLOAD_TOO_LARGE'));
      done(null, chunk);
    },
  });
  req.on('error', (err) => guard.destroy(err));
  return req.pipe(guard);
}

/** Reads the whole body (bounded), for requests that may have to be replayed on legacy. */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new StranglerError(`the request body is larger than ${limit} bytes`, 'PAYLOAD_TOO_LARGE');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

export interface ForwardOptions {
  method: string;
  path: string;
  headers: Record<string, string | string[]>;
  body: Body;
  timeoutMs: number;
  requestId: string;
  /** Extra response headers (rate limit, canary cookie). */
  extraHeaders?: Record<string, string | string[]>;
  /** Capture the response (up to this many bytes) for a shadow comparison. */
  captureBytes?: number;
  /**
   * Asked with the status of the answer before any of it is passed on: true holds it back, and
   * forward() rejects with RetryableStatus (another instance gets the request).
   */
  retryOn?: (status: number) => boolean;
}

/** The instance answered a status another instance may not (502, 503, 504); nothing was written to the client. */
export class RetryableStatus extends Error {
  readonly code = 'RETRYABLE_STATUS';
  constructor(readonly status: number) {
    super(`the instance answered ${status}`);
  }
}

/**
 * Sends the request to the upstream and streams the answer to the client. It dispatches on the
 * instance's undici pool with its own handler (what undici's stream() does inside, minus the
 * header object, the Writable and the async-hooks resource it builds per request): the raw
 * response headers go to writeHead as one flat list, body chunks are written to `res` as they
 * come, with backpressure both ways. Rejects with nothing written to the client when the
 * upstream could not be reached or did not answer in time, so the caller can fall back or map
 * the error; after the head is written, a failure can only cut the response short.
 */
export function forward(upstream: Pick<Endpoint, 'pool'>, res: ServerResponse, o: ForwardOptions): Promise<CapturedResponse> {
  return new Promise((resolve, reject) => {
    upstream.pool.dispatch(
      { method: o.method as Dispatcher.HttpMethod, path: o.path, headers: o.headers, body: o.body, headersTimeout: o.timeoutMs, bodyTimeout: o.timeoutMs },
      new ForwardHandler(res, o, resolve, reject),
    );
  });
}

function passEarlyHints(res: ServerResponse, raw: Buffer[]): void {
  if (res.headersSent || res.req.httpVersionMinor === 0 || res.req.httpVersionMajor !== 1) return;
  const link: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i].toString('latin1').toLowerCase() === 'link') link.push(raw[i + 1].toString('latin1'));
  if (link.length === 0) return;
  try {
    res.writeEarlyHints({ link });
  } catch {
    // A Link value Node refuses to write: the hint is dropped, the answer still comes.
  }
}

class ForwardHandler implements Dispatcher.DispatchHandler {
  #status = 0;
  #retry = false;
  #done = false;
  #contentType: string | undefined;
  #chunks: Buffer[] | null = null;
  #size = 0;
  #abort: ((err?: Error) => void) | null = null;
  #resume: (() => void) | null = null;
  readonly #onClose: () => void;

  constructor(
    private readonly res: ServerResponse,
    private readonly o: ForwardOptions,
    private readonly resolve: (answer: CapturedResponse) => void,
    private readonly reject: (err: unknown) => void,
  ) {
    // The client going away stops the upstream request, whether or not it has answered yet.
    this.#onClose = () => {
      if (!this.#done) this.#abort?.(new Error('the client closed the connection'));
    };
    res.once('close', this.#onClose);
  }

  onConnect(abort: (err?: Error) => void): void {
    this.#abort = abort;
    if (this.res.destroyed) abort(new Error('the client closed the connection'));
  }

  onHeaders(statusCode: number, raw: Buffer[], resume: () => void): boolean {
    if (statusCode < 200) {
      // 1xx: informational, the final answer follows. 103 Early Hints is passed on (its Link
      // headers only, and never to an HTTP/1.0 client, which cannot read a 1xx); others (102) are
      // dropped: they mean something to one connection only. (A 100 the gateway never asked
      // for ends the request in undici: the upstream never sees Expect.)
      if (statusCode === 103) passEarlyHints(this.res, raw);
      return true;
    }
    this.#status = statusCode;
    if (this.o.retryOn?.(statusCode)) {
      this.#retry = true; // the body is read and dropped; another instance gets the request
      return true;
    }
    const { res } = this;
    res.writeHead(statusCode, downstreamHeaders(raw, this.o.requestId, this.o.extraHeaders));
    if (this.o.captureBytes) {
      this.#chunks = [];
      for (let i = 0; i < raw.length; i += 2) {
        if (raw[i].length === 12 && raw[i].toString('latin1').toLowerCase() === 'content-type') this.#contentType ??= raw[i + 1].toString('latin1');
      }
    }
    // A full client socket pauses the upstream's.
    this.#resume = resume;
    res.on('drain', resume);
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.#retry) return true;
    if (this.#chunks) {
      this.#size += chunk.length;
      if (this.#size <= this.o.captureBytes!) this.#chunks.push(chunk);
    }
    return this.res.write(chunk);
  }

  onComplete(trailers: string[] | null): void {
    this.#finish();
    if (this.#retry) return this.reject(new RetryableStatus(this.#status));
    // The upstream's trailers follow the body (Node sends them on a chunked answer, drops them for HTTP/1.0).
    if (trailers?.length) {
      const passed = downstreamTrailers(trailers);
      if (passed.length) this.res.addTrailers(passed);
    }
    this.res.end();
    const captured = this.#chunks && this.#size <= (this.o.captureBytes ?? 0);
    this.resolve({ status: this.#status, contentType: this.#contentType, body: captured ? Buffer.concat(this.#chunks!) : null });
  }

  onError(err: Error): void {
    this.#finish();
    this.reject(err);
  }

  #finish(): void {
    this.#done = true;
    this.res.off('close', this.#onClose);
    if (this.#resume) this.res.off('drain', this.#resume);
  }
}
