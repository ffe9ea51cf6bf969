import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { brotliCompressSync, gzipSync } from 'node:zlib';

/** What the upstream saw of one request; bodies are hashed as they stream, never kept. */
export interface SeenRequest {
  method: string;
  url: string;
  httpVersion: string;
  rawHeaders: string[];
  headers: IncomingMessage['headers'];
  trailers: Record<string, string | undefined>;
  bodyLength: number;
  sha256: string;
  /** The request body broke off, or the client went away before the answer was complete. */
  aborted: boolean;
}

export interface ConformanceUpstream {
  url: string;
  host: string;
  port: number;
  seen: SeenRequest[];
  close(): Promise<void>;
}

/** 64 kB of fixed bytes: streamed bodies repeat it, so both ends can check them without keeping them. */
export const BLOCK = createHash('sha512').update('block').digest().toString('hex').repeat(128).slice(0, 64 * 1024);
export const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

const PAGE = `<html><body>${'strangler conformance '.repeat(400)}</body></html>`;
const GZIPPED = gzipSync(PAGE);
const BROTLIED = brotliCompressSync(PAGE);
const ETAG = '"v1-abc"';
const LAST_MODIFIED = 'Wed, 21 Oct 2026 07:28:00 GMT';

/**
 * The reference upstream of the conformance suite: a plain node:http server, the same process a
 * test asks directly and through a data plane, so both answers can be compared. It records what
 * it saw (method, target, raw headers, trailers, body length and hash, whether it broke off).
 *   /echo…         the JSON of what it saw
 *   /bytes/<n>     n bytes (BLOCK repeated), streamed with backpressure; ?length=1 with Content-Length
 *   /drip          a chunk every 20 ms until the client goes away
 *   /resource      ETag and Last-Modified; If-None-Match / If-Modified-Since → 304
 *   /compressed    the page gzip or br encoded, by Accept-Encoding (Vary), Content-Length set
 *   /cookies       three Set-Cookie headers (one with a comma in its Expires)
 *   /hop-by-hop    an answer carrying hop-by-hop headers a proxy must not pass on
 *   /early-hints   103 Early Hints (Link), then the answer; /processing: 102, then the answer
 *   /trailers      a chunked answer with trailers (one, Set-Cookie, a trailer must not carry)
 *   /long-header   a 10 kB response header
 */
export async function startConformanceUpstream(): Promise<ConformanceUpstream> {
  const seen: SeenRequest[] = [];
  const server = createServer(async (req, res) => {
    // A data plane's active health checks: answered, not recorded (rows count real traffic).
    if (req.url === '/health') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
    const entry: SeenRequest = { method: req.method ?? '', url: req.url ?? '', httpVersion: req.httpVersion, rawHeaders: req.rawHeaders, headers: req.headers, trailers: {}, bodyLength: 0, sha256: '', aborted: false };
    seen.push(entry);
    res.on('close', () => {
      if (!res.writableFinished) entry.aborted = true;
    });
    const hash = createHash('sha256');
    try {
      for await (const chunk of req as AsyncIterable<Buffer>) {
        entry.bodyLength += chunk.length;
        hash.update(chunk);
      }
    } catch {
      entry.aborted = true;
      return;
    }
    if (!req.complete) {
      entry.aborted = true;
      return;
    }
    entry.sha256 = hash.digest('hex');
    entry.trailers = { ...req.trailers };
    await answer(req, res, entry);
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    host: '127.0.0.1',
    port,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function answer(req: IncomingMessage, res: ServerResponse, entry: SeenRequest): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://x');
  const path = url.pathname;
  if (path.startsWith('/bytes/')) return sendBytes(res, Number(path.slice(7)), url.searchParams.has('length'));
  if (path === '/drip') {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    const timer = setInterval(() => res.write(BLOCK.slice(0, 1024)), 20);
    res.on('close', () => clearInterval(timer));
    return;
  }
  if (path === '/resource') {
    const headers = { etag: ETAG, 'last-modified': LAST_MODIFIED, 'cache-control': 'max-age=0', 'content-type': 'text/plain' };
    const inm = req.headers['if-none-match'];
    const ims = req.headers['if-modified-since'];
    const fresh = inm !== undefined ? inm.split(',').some((t) => t.trim() === ETAG || t.trim() === '*') : ims !== undefined && Date.parse(ims) >= Date.parse(LAST_MODIFIED);
    if (fresh) return void res.writeHead(304, headers).end();
    return void res.writeHead(200, headers).end('the resource');
  }
  if (path === '/compressed') {
    const accept = String(req.headers['accept-encoding'] ?? '');
    const [encoding, bytes] = accept.includes('br') ? ['br', BROTLIED] : accept.includes('gzip') ? ['gzip', GZIPPED] : [null, Buffer.from(PAGE)];
    res.writeHead(200, { 'content-type': 'text/html', vary: 'Accept-Encoding', 'content-length': bytes.length, ...(encoding ? { 'content-encoding': encoding } : {}) });
    return void res.end(bytes);
  }
  if (path === '/cookies') {
    res.setHeader('set-cookie', ['a=1; Path=/; HttpOnly', 'b=2; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/', 'c=3; SameSite=Strict']);
    return void res.writeHead(200, { 'content-type': 'text/plain' }).end('cookies');
  }
  if (path === '/hop-by-hop') {
    res.writeHead(200, [
      ['content-type', 'text/plain'],
      ['connection', 'keep-alive, x-upstream-private'],
      ['x-upstream-private', 'for the next hop only'],
      ['keep-alive', 'timeout=60'],
      ['proxy-authenticate', 'Basic realm="upstream"'],
      ['upgrade', 'h2c'],
      ['x-end-to-end', 'kept'],
    ].flat());
    return void res.end('hop');
  }
  if (path === '/early-hints') {
    res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' });
    return void res.writeHead(200, { 'content-type': 'text/plain' }).end('hinted');
  }
  if (path === '/processing') {
    res.writeProcessing();
    return void res.writeHead(200, { 'content-type': 'text/plain' }).end('processed');
  }
  if (path === '/trailers') {
    const chunked = req.httpVersion !== '1.0';
    res.writeHead(200, { 'content-type': 'text/plain', ...(chunked ? { trailer: 'X-Checksum, Set-Cookie' } : {}) });
    res.write('with ');
    if (chunked) res.addTrailers([['X-Checksum', 'sha256=abc'], ['Set-Cookie', 'sneaky=1']]);
    return void res.end('trailers');
  }
  if (path === '/long-header') return void res.writeHead(200, { 'x-long': 'v'.repeat(10 * 1024) }).end('long');
  const body = JSON.stringify({ method: entry.method, url: entry.url, httpVersion: entry.httpVersion, headers: entry.headers, trailers: entry.trailers, bodyLength: entry.bodyLength, sha256: entry.sha256 });
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(req.method === 'HEAD' ? undefined : body);
}

/** n bytes of BLOCK, written as the client takes them. */
async function sendBytes(res: ServerResponse, n: number, withLength: boolean): Promise<void> {
  res.writeHead(200, { 'content-type': 'application/octet-stream', ...(withLength ? { 'content-length': n } : {}) });
  if (res.req.method === 'HEAD') return void res.end();
  const block = Buffer.from(BLOCK);
  for (let left = n; left > 0 && !res.destroyed; left -= block.length) {
    if (!res.write(left >= block.length ? block : block.subarray(0, left))) {
      await new Promise<void>((ok) => {
        const go = () => {
          res.off('drain', go).off('close', go);
          ok();
        };
        res.on('drain', go).on('close', go);
      });
    }
  }
  res.end();
}
