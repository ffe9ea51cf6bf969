import { randomUUID } from 'node:crypto';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { Pool } from 'undici';

/**
 * The floor of the gateway's stack, for the bench: node:http in, one undici Pool out, stream()
 * straight into the response; no routing, auth, limits, metrics or header rules. The issue's
 * reference figures name this setup (≈ 0.40× nginx); the gateway is measured against it too.
 *
 * With `--headers`, the same floor sends what the all-on gateway sends on the wire for the
 * bench's request and nothing more is decided: the client's headers passed on, a new request id
 * and traceparent, X-Forwarded-For/Proto/Host, the verified user's headers (fixed values: no
 * token is read), and back to the client the upstream's headers with X-Request-Id and the five
 * RateLimit headers (fixed values: nothing is counted). What that costs is the price of the
 * headers alone, apart from the gateway's logic.
 */
const [listenPort, upstreamPort] = process.argv.slice(2).map(Number);
const withHeaders = process.argv.includes('--headers');
const pool = new Pool(`http://127.0.0.1:${upstreamPort}`, { connections: 128, pipelining: 1, keepAliveTimeout: 30_000 });
const host = `127.0.0.1:${upstreamPort}`;

function upstreamHeaders(incoming: IncomingHttpHeaders, requestId: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const name in incoming) if (name !== 'connection' && name !== 'host') out[name] = incoming[name]!;
  out.host = host;
  out['x-request-id'] = requestId;
  out['x-forwarded-for'] = '127.0.0.1';
  out['x-forwarded-proto'] = 'http';
  if (incoming.host) out['x-forwarded-host'] = incoming.host;
  out.traceparent = `00-${requestId.replace(/-/g, '')}-${requestId.slice(0, 8)}${requestId.slice(9, 13)}${requestId.slice(14, 18)}-01`;
  out['x-user-id'] = '42';
  out['x-user-issuer'] = 'legacy';
  return out;
}

const RATE_LIMIT_HEADERS = { 'ratelimit-policy': '1000000000;w=60', ratelimit: 'limit=1000000000, remaining=999999999, reset=1', 'ratelimit-limit': '1000000000', 'ratelimit-remaining': '999999999', 'ratelimit-reset': '1' };

const server = createServer((req, res) => {
  const requestId = withHeaders ? randomUUID() : '';
  pool
    .stream({ method: 'GET', path: req.url ?? '/', headers: withHeaders ? upstreamHeaders(req.headers, requestId) : { host }, opaque: res }, ({ statusCode, headers, opaque }) => {
      const out = opaque as typeof res;
      const head: Record<string, string> = { 'content-type': String(headers['content-type'] ?? 'application/octet-stream'), 'content-length': String(headers['content-length'] ?? '') };
      if (withHeaders) Object.assign(head, { date: String(headers.date), 'x-request-id': requestId }, RATE_LIMIT_HEADERS);
      out.writeHead(statusCode, head);
      return out;
    })
    .catch(() => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
});
server.keepAliveTimeout = 65_000;
server.listen(listenPort, '127.0.0.1', () => process.stdout.write(`listening ${listenPort}\n`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
