import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { errorBody, httpStatusFor, StranglerError } from '../core/errors.ts';
import type { Cutover } from '../cutover/executor.ts';
import { createAdminAuth } from '../gateway/admin-auth.ts';
import { actionStatus, parseAction, runAction } from './actions.ts';
import type { Dashboard } from './dashboard.ts';

export interface UiServerOptions {
  dashboard: Dashboard;
  cutover: Cutover;
  /** gateway.adminToken; without one the page shows the state and refuses every action. */
  adminToken: string | undefined;
  host: string;
  port: number;
  /** SSE keep-alive comment interval. */
  keepAliveMs?: number;
}

/** The front end's files: a fixed list read once at start (ui/public, copied to dist/ui/public by the build). */
const FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
};

/**
 * SECURITY: the page runs only its own script and style and is never framed (clickjacking of
 * the action buttons), and sends no referrer.
 */
const PAGE_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|\[::1\]|::1)$/i;
const MAX_BODY = 4096;

/**
 * `strangler ui`'s HTTP server (node:http, no framework): the page, `GET /api/state` (the
 * snapshot), `GET /api/events` (Server-Sent Events: a snapshot at once and one each time the
 * state changes), and `POST /api/actions/promote|rollback` behind the gateway's admin token.
 */
export async function startUiServer(o: UiServerOptions): Promise<{ server: Server; url: string; close(): Promise<void> }> {
  const dir = join(import.meta.dirname, 'public');
  const files = Object.fromEntries(Object.entries(FILES).map(([path, f]) => [path, { body: readFileSync(join(dir, f.file)), type: f.type }]));
  const isAdmin = o.adminToken ? createAdminAuth(o.adminToken) : null;
  const streams = new Set<ServerResponse>();
  let port = o.port;

  const send = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...PAGE_HEADERS });
    res.end(JSON.stringify(body));
  };
  const fail = (res: ServerResponse, err: StranglerError) => send(res, httpStatusFor(err.code), errorBody(err.code, err.message));

  /**
   * SECURITY: bound to a loopback address, only loopback Host names are answered: a web page the
   * operator visits cannot rebind its own name to 127.0.0.1 (DNS rebinding) and read the state.
   */
  function hostAllowed(req: IncomingMessage): boolean {
    if (!LOOPBACK.test(o.host)) return true;
    const host = req.headers.host ?? '';
    const name = host.replace(/:\d+$/, '');
    return LOOPBACK.test(name) && (host === name || host.endsWith(`:${port}`));
  }

  async function readJson(req: IncomingMessage): Promise<unknown> {
    let size = 0;
    const chunks: Buffer[] = [];
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > MAX_BODY) throw new StranglerError(`the request body is over ${MAX_BODY} bytes`, 'PAYLOAD_TOO_LARGE');
      chunks.push(chunk as Buffer);
    }
    try {
      return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
    } catch {
      throw new StranglerError('the request body is not JSON; send {"prefix": "/api/...", "reason": "..."}', 'BAD_INPUT');
    }
  }

  async function action(req: IncomingMessage, res: ServerResponse, name: string): Promise<void> {
    if (req.method !== 'POST') return fail(res, new StranglerError(`${req.method} ${req.url}: actions are POST`, 'METHOD_NOT_ALLOWED'));
    if (!isAdmin) return fail(res, new StranglerError('actions are off: no admin token is configured; start strangler ui with gateway.adminToken (--admin-token-file or STRANGLER_ADMIN_TOKEN)', 'FORBIDDEN'));
    // SECURITY: the token comes in the Authorization header only (never a cookie, which a
    // browser would attach to a forged cross-site request, nor the URL, which logs and history
    // keep); compared in constant time (gateway/admin-auth.ts). No CORS headers are ever sent,
    // so another origin cannot make a browser send this header here.
    if (!isAdmin(req.headers.authorization)) return fail(res, new StranglerError('promote and rollback need the admin token (gateway.adminToken) in an Authorization: Bearer header', 'UNAUTHENTICATED'));
    // SECURITY: JSON only: a cross-site HTML form cannot send this content type.
    if (!/^application\/json\b/i.test(req.headers['content-type'] ?? '')) return fail(res, new StranglerError('send the action as Content-Type: application/json', 'UNSUPPORTED_MEDIA_TYPE'));
    const request = parseAction(name, await readJson(req));
    const result = await runAction(o.cutover, request);
    await o.dashboard.refresh().catch(() => undefined);
    send(res, actionStatus(result), result.ok ? { ok: true, exitCode: result.exitCode, text: result.text, outcome: result.outcome } : result);
  }

  function events(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', connection: 'keep-alive', ...PAGE_HEADERS });
    const push = (body: string) => res.write(`event: state\ndata: ${body}\n\n`);
    push(o.dashboard.body());
    const unsubscribe = o.dashboard.subscribe(push);
    const alive = setInterval(() => res.write(': keep-alive\n\n'), o.keepAliveMs ?? 15_000);
    streams.add(res);
    req.on('close', () => {
      clearInterval(alive);
      unsubscribe();
      streams.delete(res);
    });
  }

  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (!hostAllowed(req)) return fail(res, new StranglerError(`host "${req.headers.host}" is not this dashboard's; open it as http://127.0.0.1:${port}/`, 'FORBIDDEN'));
    if (path.startsWith('/api/actions/')) {
      return void action(req, res, path.slice('/api/actions/'.length)).catch((err) => {
        if (err instanceof StranglerError) fail(res, err);
        else send(res, 500, errorBody('INTERNAL', (err as Error).message));
      });
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return fail(res, new StranglerError(`${req.method} ${path}: only GET here`, 'METHOD_NOT_ALLOWED'));
    if (path === '/api/state') {
      // With no page open the loop reads seldom: a read older than a page's refresh is made again first.
      return void o.dashboard.fresh().finally(() => {
        res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', ...PAGE_HEADERS });
        res.end(o.dashboard.body());
      });
    }
    if (path === '/api/events') return events(req, res);
    const file = files[path];
    if (!file) return fail(res, new StranglerError(`${path}: no such page; the dashboard is at /`, 'NOT_FOUND'));
    res.writeHead(200, { 'content-type': file.type, ...PAGE_HEADERS });
    res.end(req.method === 'HEAD' ? undefined : file.body);
  });
  await new Promise<void>((ok, bad) => {
    server.once('error', bad);
    server.listen(o.port, o.host, () => ok());
  });
  port = (server.address() as AddressInfo).port;
  const shown = o.host.includes(':') ? `[${o.host}]` : o.host;
  return {
    server,
    url: `http://${shown}:${port}`,
    async close() {
      for (const res of streams) res.end();
      await new Promise<void>((ok) => server.close(() => ok()));
    },
  };
}
