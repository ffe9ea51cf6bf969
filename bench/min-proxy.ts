import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { Pool } from 'undici';
import { traceparentFor, upstreamHeaders } from '../gateway/headers.ts';
import { rateLimitHeaders } from '../gateway/rate-limit.ts';

/**
 * The floor of the gateway's stack, for the bench: node:http in, one undici Pool out, stream()
 * straight into the response; no routing, auth, limits, metrics or header rules. The issue's
 * reference figures name this setup (≈ 0.40× nginx); the gateway is measured against it too.
 *
 * With `--headers`, the same floor sends what the all-on gateway sends on the wire for the
 * bench's request, built by the gateway's own functions, and nothing more is decided: the
 * client's headers passed on with a new request id and traceparent, X-Forwarded-For/Proto/Host
 * and the user's headers (headers.ts upstreamHeaders, for a fixed user: no token is read), and
 * back to the client the upstream's headers with X-Request-Id and the RateLimit headers
 * (rate-limit.ts rateLimitHeaders, for a fixed count: nothing is counted). What that costs is the
 * price of the headers alone, apart from the gateway's logic.
 */
const [listenPort, upstreamPort] = process.argv.slice(2).map(Number);
const withHeaders = process.argv.includes('--headers');
const pool = new Pool(`http://127.0.0.1:${upstreamPort}`, { connections: 128, pipelining: 1, keepAliveTimeout: 30_000 });
const host = `127.0.0.1:${upstreamPort}`;
const user = { sub: '42', iss: 'legacy' };
const counted = rateLimitHeaders({ limited: false, limit: 1_000_000_000, remaining: 999_999_999, resetMs: 1_000, policy: '1000000000;w=60' });

const server = createServer((req, res) => {
  const requestId = withHeaders ? randomUUID() : '';
  const headers = withHeaders
    ? upstreamHeaders(req.headers, { requestId, forwardedFor: req.socket.remoteAddress ?? '', proto: 'http', host: req.headers.host, identity: user, traceparent: traceparentFor(req.headers.traceparent) })
    : { host };
  pool
    .stream({ method: 'GET', path: req.url ?? '/', headers, opaque: res }, ({ statusCode, headers, opaque }) => {
      const out = opaque as typeof res;
      const head: Record<string, string> = { 'content-type': String(headers['content-type'] ?? 'application/octet-stream'), 'content-length': String(headers['content-length'] ?? '') };
      if (withHeaders) Object.assign(head, { date: String(headers.date), 'x-request-id': requestId }, counted);
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
