import { createServer } from 'node:http';

/** The trivial upstream every gateway bench target proxies to: a small JSON answer, keep-alive. */
const body = JSON.stringify({ ok: true, items: [1, 2, 3] });
const port = Number(process.argv[2] ?? 0);
const server = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});
server.keepAliveTimeout = 65_000;
server.listen(port, '127.0.0.1', () => process.stdout.write(`listening ${(server.address() as { port: number }).port}\n`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
