import { request, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from '../core/logger.ts';
import { IDENTITY_HEADERS } from './headers.ts';
import { readCanaryCookie } from './canary.ts';
import type { AuthOutcome } from './edge-auth.ts';
import { normalizeRequestTarget } from './path-normalize.ts';
import { chooseTarget, matchRoute } from './route-choice.ts';
import type { RouteSource } from './route-types.ts';
import type { Cluster } from './upstreams.ts';

function refuse(socket: Duplex, status: number, message: string): void {
  const body = JSON.stringify({ error: { code: status === 401 ? 'UNAUTHENTICATED' : 'BAD_INPUT', message } });
  socket.end(`HTTP/1.1 ${status} ${status === 401 ? 'Unauthorized' : status === 502 ? 'Bad Gateway' : 'Bad Request'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
}

/**
 * WebSocket (HTTP/1.1 Upgrade) proxying, with the same path normalisation, JWT check and route
 * choice as plain requests; once both sides have switched protocols the sockets are piped.
 */
export async function proxyUpgrade(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  deps: { routes: RouteSource & { loaded?: boolean }; upstreams: Map<string, Cluster>; authenticate: (matchPath: string, authorization?: string) => AuthOutcome | Promise<AuthOutcome>; logger: Logger },
): Promise<void> {
  const target = normalizeRequestTarget(req.url ?? '/');
  if (!target.ok) return refuse(socket, 400, target.reason);
  if (!(deps.routes.loaded ?? true)) return refuse(socket, 502, 'no route table yet');
  const auth = await deps.authenticate(target.matchPath, req.headers.authorization);
  if (!auth.ok) return refuse(socket, 401, auth.message);
  const route = matchRoute(deps.routes.current(), target.matchPath);
  const service = route ? deps.upstreams.get(route.service) : undefined;
  const choice = chooseTarget(service ? route : null, {
    method: 'GET',
    stickyKey: auth.ok && auth.identity ? auth.identity.sub : readCanaryCookie(req.headers.cookie),
    noInstance: service ? !service.hasAvailable() : false,
    retrySafe: false,
  });
  const cluster = choice.target === 'service' ? service! : deps.upstreams.get('legacy')!;
  const upstream = cluster.pick();
  if (!upstream) return refuse(socket, 503, `no instance of ${cluster.name} is available`);
  const headers: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !(IDENTITY_HEADERS as readonly string[]).includes(k)) headers[k] = v;
  if (auth.identity) headers['x-user-id'] = auth.identity.sub; // SECURITY: only from a verified token

  const url = new URL(upstream.origin);
  const proxyReq = request({ host: url.hostname, port: url.port, method: req.method, path: `${target.path}${target.query}`, headers });
  proxyReq.on('upgrade', (res, upstreamSocket, upstreamHead) => {
    let head101 = `HTTP/1.1 101 Switching Protocols\r\n`;
    for (let i = 0; i < res.rawHeaders.length; i += 2) head101 += `${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}\r\n`;
    socket.write(`${head101}\r\n`);
    if (upstreamHead.length) socket.write(upstreamHead);
    if (head.length) upstreamSocket.write(head);
    upstreamSocket.pipe(socket).pipe(upstreamSocket);
    const close = () => {
      upstreamSocket.destroy();
      socket.destroy();
    };
    upstreamSocket.on('error', close);
    socket.on('error', close);
    upstreamSocket.on('close', close);
    socket.on('close', close);
  });
  proxyReq.on('response', (res) => {
    // The upstream refused to upgrade: pass its answer on and close.
    let text = `HTTP/1.1 ${res.statusCode} ${res.statusMessage}\r\n`;
    for (let i = 0; i < res.rawHeaders.length; i += 2) text += `${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}\r\n`;
    socket.write(`${text}\r\n`);
    res.pipe(socket);
  });
  proxyReq.on('error', (err) => {
    deps.logger.warn({ err }, 'websocket upstream unreachable');
    refuse(socket, 502, `${cluster.name} cannot be reached`);
  });
  proxyReq.end();
}
