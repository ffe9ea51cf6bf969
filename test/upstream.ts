import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import { HEALTH_CHECK_USER_AGENT } from '../gateway/upstreams.ts';

export interface EchoUpstream {
  name: string;
  url: string;
  port: number;
  /** Every request seen: method, url, headers, body length. */
  seen: Array<{ method: string; url: string; headers: IncomingMessage['headers']; body: string }>;
  /** Replace the behaviour for paths starting with a prefix. */
  override: Map<string, (req: IncomingMessage, body: string) => { status: number; body: unknown; delayMs?: number; until?: Promise<unknown>; headers?: Record<string, string> }>;
  close(): Promise<void>;
}

/**
 * A real HTTP server standing in for legacy or a service in gateway tests: it answers
 * `{ server, method, url, headers }` as JSON, honours /delay/<ms>, /stream/<ms> (half an answer,
 * the rest after ms) and /status/<code>, and echoes WebSocket messages prefixed with its name
 * (their upgrade requests are in `seen` too).
 */
export async function startEchoUpstream(name: string, port = 0): Promise<EchoUpstream> {
  const seen: EchoUpstream['seen'] = [];
  const override: EchoUpstream['override'] = new Map();
  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    try {
      for await (const c of req) chunks.push(c as Buffer);
    } catch {
      return; // the request broke off while its body was coming (the gateway's client went away)
    }
    const body = Buffer.concat(chunks).toString('utf8');
    // The gateway's active health checks: answered, not recorded (tests count real traffic).
    if (req.headers['user-agent'] === HEALTH_CHECK_USER_AGENT && !override.has('/health')) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'ok', server: name }));
      return;
    }
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
    const url = req.url ?? '/';
    for (const [prefix, fn] of override) {
      if (url.startsWith(prefix)) {
        const r = fn(req, body);
        if (r.delayMs) await new Promise((ok) => setTimeout(ok, r.delayMs));
        if (r.until) await r.until.catch(() => undefined); // answered once the test has done what it does meanwhile
        res.writeHead(r.status, { 'content-type': 'application/json', ...r.headers }).end(JSON.stringify(r.body));
        return;
      }
    }
    // The head and a first chunk at once, the rest after <ms>: an answer still under way.
    const stream = /\/stream\/(\d+)/.exec(url);
    if (stream) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"part":1');
      await new Promise((ok) => setTimeout(ok, Number(stream[1])));
      if (!res.destroyed) res.end('}');
      return;
    }
    const delay = /\/delay\/(\d+)/.exec(url);
    if (delay) await new Promise((ok) => setTimeout(ok, Number(delay[1])));
    const status = /\/status\/(\d{3})/.exec(url);
    res.writeHead(status ? Number(status[1]) : 200, { 'content-type': 'application/json', connection: 'keep-alive', 'keep-alive': 'timeout=60' });
    res.end(JSON.stringify({ server: name, method: req.method, url, headers: req.headers, bodyLength: body.length, body }));
  });
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws, req) => {
    seen.push({ method: req.method ?? 'GET', url: req.url ?? '', headers: req.headers, body: '' });
    ws.on('message', (m) => ws.send(`${name}:${req.headers['x-user-id'] ?? '-'}:${m.toString()}`));
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const actual = (server.address() as AddressInfo).port;
  return {
    name,
    url: `http://127.0.0.1:${actual}`,
    port: actual,
    seen,
    override,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
