import { randomBytes } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

/** RFC 9110 §7.6.1 hop-by-hop headers: meaningful for one connection, never forwarded. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'content-length']);

/**
 * SECURITY: identity headers the gateway sets from a verified token. Any a client sends are
 * removed first, so a service that trusts them can never be told who the caller is by the caller.
 */
export const IDENTITY_HEADERS = ['x-user-id', 'x-user-email', 'x-user-issuer', 'x-authenticated-user', 'x-forwarded-user'] as const;
/**
 * Also never sent upstream: Expect (the gateway answers 100-continue itself, and undici refuses
 * it) and, SECURITY, `Proxy` (httpoxy: CGI-style upstreams read it as HTTP_PROXY).
 */
const STRIPPED = new Set<string>([...HOP_BY_HOP, ...IDENTITY_HEADERS, 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'forwarded', 'x-real-ip', 'expect', 'proxy']);
/**
 * Upstream response headers never passed on: hop-by-hop ones (Content-Length stays) and
 * X-Request-Id (ours replaces it). Trailer goes too: Node refuses to write it to a client it
 * cannot send chunks to (HTTP/1.0); the trailers themselves are passed on when it can.
 */
const DROPPED_DOWNSTREAM = new Set<string>([...[...HOP_BY_HOP].filter((h) => h !== 'content-length'), 'x-request-id']);

export interface ForwardContext {
  requestId: string;
  /** The X-Forwarded-For chain to send (already decided by the trusted-proxy rule). */
  forwardedFor: string;
  proto: string;
  host: string | undefined;
  identity?: { sub: string; email?: string; iss: string };
  traceparent: string;
}

/**
 * A value as its UTF-8 bytes on the wire (a header is bytes; undici writes a string as Latin-1 and
 * refuses characters beyond it): a user id such as "zoë" or one with an emoji reaches the service
 * as the same bytes HAProxy sends. Plain ASCII, nearly every value, is returned as it is.
 */
function utf8Header(value: string): string {
  return /^[\x20-\x7e]*$/.test(value) ? value : Buffer.from(value, 'utf8').toString('latin1');
}

/**
 * The headers sent upstream: the client's, minus hop-by-hop (and any header the client's
 * Connection header lists) and minus identity/forwarding headers, plus ours.
 */
export function upstreamHeaders(incoming: IncomingHttpHeaders, ctx: ForwardContext): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const connection = incoming.connection;
  const listed = connection ? new Set(connection.toLowerCase().split(',').map((t) => t.trim())) : null;
  for (const name in incoming) {
    if (STRIPPED.has(name) || listed?.has(name) || name.startsWith('proxy-')) continue;
    const value = incoming[name];
    if (value !== undefined) out[name] = value;
  }
  if (incoming['content-length'] !== undefined) out['content-length'] = incoming['content-length'];
  out['x-request-id'] = ctx.requestId;
  out['x-forwarded-for'] = ctx.forwardedFor;
  out['x-forwarded-proto'] = ctx.proto;
  if (ctx.host) out['x-forwarded-host'] = ctx.host;
  out.traceparent = ctx.traceparent;
  if (ctx.identity) {
    out['x-user-id'] = utf8Header(ctx.identity.sub);
    if (ctx.identity.email) out['x-user-email'] = utf8Header(ctx.identity.email);
    out['x-user-issuer'] = utf8Header(ctx.identity.iss);
  }
  return out;
}

/**
 * The response head for the client, as the flat [name, value, ...] list writeHead takes, from
 * undici's raw upstream headers: minus hop-by-hop ones (and any the upstream's Connection header
 * lists), with our X-Request-Id, and the gateway's own headers (rate limit, canary cookie): those
 * replace an upstream header of the same name, except Set-Cookie, which is added to the upstream's.
 */
export function downstreamHeaders(raw: Buffer[], requestId: string, extra?: Record<string, string | string[]>): string[] {
  const out: string[] = [];
  let connection: string | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toString('latin1');
    const lower = name.toLowerCase();
    if (DROPPED_DOWNSTREAM.has(lower)) {
      if (lower === 'connection') connection = raw[i + 1].toString('latin1').toLowerCase();
      continue;
    }
    if (extra && lower !== 'set-cookie' && extra[lower] !== undefined) continue;
    out.push(name, raw[i + 1].toString('latin1'));
  }
  // Connection: keep-alive or close (nearly every answer) lists no other header.
  if (connection !== null && connection !== 'keep-alive' && connection !== 'close') {
    const listed = new Set(connection.split(',').map((t) => t.trim()));
    for (let i = out.length - 2; i >= 0; i -= 2) if (listed.has(out[i].toLowerCase())) out.splice(i, 2);
  }
  out.push('x-request-id', requestId);
  if (extra) {
    for (const name in extra) {
      const value = extra[name];
      if (Array.isArray(value)) for (const v of value) out.push(name, v);
      else out.push(name, value);
    }
  }
  return out;
}

/** Fields never taken from an upstream's trailers: framing, routing and hop-by-hop ones (RFC 9110 §6.5.1). */
const NOT_IN_TRAILERS = new Set([...HOP_BY_HOP, 'content-encoding', 'content-type', 'content-range', 'set-cookie', 'authorization', 'cache-control', 'expect', 'max-forwards', 'x-request-id']);

/** An upstream's raw trailers as [name, value] pairs for addTrailers, minus those a trailer must not carry. */
export function downstreamTrailers(raw: Array<string | Buffer>): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = String(raw[i]);
    if (!NOT_IN_TRAILERS.has(name.toLowerCase())) out.push([name, String(raw[i + 1])]);
  }
  return out;
}

const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

let pool = Buffer.alloc(0);
let offset = 0;

/** 24 random bytes as hex, from a pool refilled 8 kB at a time (one syscall per ~340 requests). */
export function randomHex48(): string {
  if (offset + 24 > pool.length) {
    pool = randomBytes(8192);
    offset = 0;
  }
  offset += 24;
  return pool.toString('hex', offset - 24, offset);
}

/** The client's traceparent when well-formed, else a new one (W3C Trace Context). */
export function traceparentFor(header: string | string[] | undefined, random: () => string = randomHex48): string {
  if (typeof header === 'string' && TRACEPARENT.test(header) && !header.startsWith('ff')) return header;
  const hex = random();
  return `00-${hex.slice(0, 32)}-${hex.slice(32, 48)}-01`;
}

/** The client's X-Request-Id when it is a safe token, else null (the caller makes one). */
export function validRequestId(header: string | string[] | undefined): string | null {
  return typeof header === 'string' && REQUEST_ID.test(header) ? header : null;
}
