import { createServer } from 'node:http';
import { Pool } from 'undici';

/**
 * The floor of the gateway's stack, for the bench: node:http in, one undici Pool out, stream()
 * straight into the response; no routing, auth, limits, metrics or header rules. The issue's
 * reference figures name this setup (≈ 0.40× nginx); the gateway is measured against it too.
 */
const [listenPort, upstreamPort] = process.argv.slice(2).map(Number);
const pool = new Pool(`http://127.0.0.1:${upstreamPort}`, { connections: 128, pipelining: 1, keepAliveTimeout: 30_000 });
const server = createServer((req, res) => {
  pool
    .stream({ method: 'GET', path: req.url ?? '/', headers: { host: `127.0.0.1:${upstreamPort}` }, opaque: res }, ({ statusCode, headers, opaque }) => {
      const out = opaque as typeof res;
      out.writeHead(statusCode, { 'content-type': String(headers['content-type'] ?? 'application/octet-stream'), 'content-length': String(headers['content-length'] ?? '') });
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
