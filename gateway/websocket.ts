import { request, STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { errorBody } from '../core/errors.ts';
import type { Logger } from '../core/logger.ts';
import type { Tracing } from '../core/tracing/tracing.ts';
import { normalizeRequestTarget } from './path-normalize.ts';
import type { Pipeline, Refused } from './pipeline.ts';
import { describeChoice, startUpgradeSpan } from './request-span.ts';
import { failureKind, type Cluster } from './upstreams.ts';

/** An error answer written on the raw socket (no ServerResponse exists for an upgrade), as sendError writes it. */
function refuseOn(socket: Duplex, r: Pick<Refused, 'status' | 'code' | 'message' | 'requestId'> & { headers?: Record<string, string> }): void {
  const body = JSON.stringify(errorBody(r.code, r.message));
  let head = `HTTP/1.1 ${r.status} ${STATUS_CODES[r.status] ?? 'Error'}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${r.requestId}\r\nconnection: close\r\n`;
  for (const [name, value] of Object.entries(r.headers ?? {})) head += `${name}: ${value}\r\n`;
  socket.end(`${head}\r\n${body}`);
}

/**
 * WebSocket (HTTP/1.1 Upgrade) proxying. The upgrade request goes through the same pipeline as
 * a plain request (request id, path normalisation, route table, JWT, client address by the
 * trusted-proxy rule, rate limit, the headers sent upstream, the side chosen); once both sides
 * have switched protocols the sockets are piped. Its outcome counts like a plain request's: in
 * the route's figures (the canary analysis reads them) and in the instance's outlier detection.
 */
export async function proxyUpgrade(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  deps: {
    pipeline: Pipeline;
    upstreams: Map<string, Cluster>;
    logger: Logger;
    /** The answer to the upgrade (101 once switched), as the plain path records its answers. */
    record: (service: string | undefined, prefix: string | undefined, target: 'legacy' | 'service', status: number, started: number) => void;
    /** The service had no available instance for it. */
    noInstance: (service: string) => void;
    /** Set when tracing is on: the handshake gets a span, as a plain request does. */
    tracing?: Tracing;
  },
): Promise<void> {
  const { pipeline } = deps;
  const started = performance.now();
  const requestId = pipeline.requestId(req);
  const traced = deps.tracing && startUpgradeSpan(deps.tracing, req, requestId);
  const refuse = (r: Parameters<typeof refuseOn>[1]) => {
    traced?.answered(r.status);
    refuseOn(socket, r);
  };
  const target = normalizeRequestTarget(req.url ?? '/');
  // SECURITY: a path the gateway cannot read exactly as the upstream will is refused, never guessed.
  if (!target.ok) return refuse({ status: 400, code: 'BAD_INPUT', message: `the request path is refused: ${target.reason}`, requestId });
  const admitted = pipeline.admit(req, requestId, target);
  const a = admitted instanceof Promise ? await admitted : admitted;
  if (!a.ok) return refuse(a);
  const service = a.route ? deps.upstreams.get(a.route.service) : undefined;
  const choice = pipeline.choose(req, a, service, { method: 'GET', retrySafe: false, setCookie: false });
  if (traced) describeChoice(traced.span, req.method ?? 'GET', a.route, choice);
  const cluster = choice.target === 'service' ? service! : deps.upstreams.get('legacy')!;
  // Sent to legacy because the service had no instance: the service failed it, as on the plain path.
  if (choice.why === 'no-instance' && a.route) deps.noInstance(a.route.service);
  const upstream = cluster.pick();
  const outcome = (status: number) => deps.record(a.route?.service, a.route?.prefix, choice.target, status, started);
  if (!upstream) {
    if (choice.target === 'service') deps.noInstance(cluster.name);
    else outcome(503);
    return refuse({ status: 503, code: 'NOT_READY', message: `no instance of ${cluster.name} is available; retry shortly`, requestId, headers: { 'retry-after': '1' } });
  }
  // The plain request's headers (X-Forwarded-*, X-Request-Id, identity only from a verified
  // token), with the upgrade's own hop-by-hop headers put back.
  const headers = pipeline.forwardHeaders(req, a);
  headers.connection = 'Upgrade';
  if (req.headers.upgrade) headers.upgrade = req.headers.upgrade;
  // The upstream's spans are children of the gateway's.
  if (traced) headers.traceparent = traced.span.traceparent;

  const url = new URL(upstream.origin);
  const proxyReq = request({ host: url.hostname, port: url.port, method: req.method, path: `${target.path}${target.query}`, headers });
  proxyReq.on('upgrade', (res, upstreamSocket, upstreamHead) => {
    cluster.report(upstream, { ok: true, status: 101 });
    outcome(101);
    traced?.answered(101);
    let head101 = `HTTP/1.1 101 Switching Protocols\r\n`;
    for (let i = 0; i < res.rawHeaders.length; i += 2) head101 += `${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}\r\n`;
    for (const [name, value] of Object.entries(a.responseHeaders)) for (const v of Array.isArray(value) ? value : [value]) head101 += `${name}: ${v}\r\n`;
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
    cluster.report(upstream, { ok: res.statusCode! < 500, status: res.statusCode });
    outcome(res.statusCode!);
    traced?.answered(res.statusCode!);
    let text = `HTTP/1.1 ${res.statusCode} ${res.statusMessage}\r\n`;
    for (let i = 0; i < res.rawHeaders.length; i += 2) text += `${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}\r\n`;
    socket.write(`${text}\r\n`);
    res.pipe(socket);
  });
  proxyReq.on('error', (err) => {
    deps.logger.warn({ err, reqId: requestId }, 'websocket upstream unreachable');
    cluster.report(upstream, { ok: false, kind: failureKind(err) ?? 'connect' });
    outcome(502);
    refuse({ status: 502, code: 'UPSTREAM_UNAVAILABLE', message: `${cluster.name} cannot be reached`, requestId });
  });
  proxyReq.end();
}
