import type { IncomingMessage, ServerResponse } from 'node:http';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Dispatcher } from 'undici';
import { StranglerError } from '../core/errors.ts';
import { downstreamHeaders } from './headers.ts';
import type { CapturedResponse } from './shadow.ts';
import type { Upstream } from './upstreams.ts';

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
}

/**
 * Sends the request to the upstream and resolves when the response head is in; the body is then
 * streamed to the client. Rejects (before anything was written to the client) when the upstream
 * could not be reached or did not answer in time, so the caller can fall back or map the error.
 */
export async function forward(upstream: Upstream, res: ServerResponse, o: ForwardOptions): Promise<{ status: number; done: Promise<CapturedResponse | null> }> {
  const response = await upstream.breaker.execute(() =>
    upstream.pool.request({
      method: o.method as Dispatcher.HttpMethod,
      path: o.path,
      headers: o.headers,
      body: o.body,
      headersTimeout: o.timeoutMs,
      bodyTimeout: o.timeoutMs,
    }),
  );
  const headers = downstreamHeaders(response.headers, o.requestId);
  if (o.extraHeaders) Object.assign(headers, o.extraHeaders);
  res.writeHead(response.statusCode, headers);
  const contentType = response.headers['content-type'];
  const captured: Buffer[] | null = o.captureBytes ? [] : null;
  let capturedSize = 0;
  if (captured) {
    response.body.on('data', (chunk: Buffer) => {
      capturedSize += chunk.length;
      if (capturedSize <= o.captureBytes!) captured.push(chunk);
    });
  }
  const done = pipeline(response.body, res).then(
    () =>
      captured
        ? { status: response.statusCode, contentType: Array.isArray(contentType) ? contentType[0] : contentType, body: capturedSize <= o.captureBytes! ? Buffer.concat(captured) : null }
        : null,
    (err) => {
      // The client went away or the upstream broke mid-body: nothing more can be sent.
      response.body.destroy();
      res.destroy(err);
      return null;
    },
  );
  return { status: response.statusCode, done };
}
