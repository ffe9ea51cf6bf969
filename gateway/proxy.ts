import type { IncomingMessage, ServerResponse } from 'node:http';
import { Transform, Writable, type Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { StranglerError } from '../core/errors.ts';
import { downstreamHeaders } from './headers.ts';
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
  /** Answers with these statuses are not passed on: forward() rejects with RetryableStatus (another instance gets the request). */
  retryStatuses?: readonly number[];
}

/** The instance answered a status another instance may not (502, 503, 504); nothing was written to the client. */
export class RetryableStatus extends Error {
  readonly code = 'RETRYABLE_STATUS';
  constructor(readonly status: number) {
    super(`the instance answered ${status}`);
  }
}

/**
 * Sends the request to the upstream and streams the answer to the client (undici's stream():
 * the response body is written straight into `res`, about twice the throughput of request() +
 * pipeline). Rejects with nothing written to the client when the upstream could not be reached
 * or did not answer in time, so the caller can fall back or map the error; after the head is
 * written, a failure can only cut the response short.
 */
export async function forward(upstream: Pick<Endpoint, 'pool'>, res: ServerResponse, o: ForwardOptions): Promise<CapturedResponse> {
  const opaque = { statusCode: 0, contentType: undefined as string | undefined, chunks: null as Buffer[] | null, size: 0, retry: false };
  await upstream.pool.stream(
    {
      method: o.method as Dispatcher.HttpMethod,
      path: o.path,
      headers: o.headers,
      body: o.body,
      headersTimeout: o.timeoutMs,
      bodyTimeout: o.timeoutMs,
      opaque,
    },
    ({ statusCode, headers }) => {
      opaque.statusCode = statusCode;
      if (o.retryStatuses?.includes(statusCode)) {
        opaque.retry = true;
        return new Writable({ write: (_chunk, _enc, done) => done() });
      }
      const out = downstreamHeaders(headers, o.requestId);
      if (o.extraHeaders) Object.assign(out, o.extraHeaders);
      res.writeHead(statusCode, out);
      if (!o.captureBytes) return res;
      const type = headers['content-type'];
      opaque.contentType = Array.isArray(type) ? type[0] : type;
      opaque.chunks = [];
      const max = o.captureBytes;
      const tee = new Transform({
        transform(chunk: Buffer, _enc, done) {
          opaque.size += chunk.length;
          if (opaque.size <= max) opaque.chunks!.push(chunk);
          done(null, chunk);
        },
      });
      tee.pipe(res);
      return tee;
    },
  );
  if (opaque.retry) throw new RetryableStatus(opaque.statusCode);
  return {
    status: opaque.statusCode,
    contentType: opaque.contentType,
    body: opaque.chunks && opaque.size <= (o.captureBytes ?? 0) ? Buffer.concat(opaque.chunks) : null,
  };
}
