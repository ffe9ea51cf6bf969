import { createServer, ServerResponse, type IncomingMessage, type Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Redis } from 'ioredis';
import type { ResolvedConfig } from '../core/config/load.ts';
import { requireSecret } from '../core/config/secrets.ts';
import type { ResolvedHealthCheck } from '../core/health-check.ts';
import { errorBody } from '../core/errors.ts';
import { StranglerError } from '../core/errors.ts';
import type { Logger } from '../core/logger.ts';
import type { RedisHealth } from '../core/redis-health.ts';
import { issuersOf } from './issuers.ts';
import { createTokenVerifier } from './token-verifier.ts';
import { createCredentialLimits } from './credential-limit.ts';
import { createAdminAuth } from './admin-auth.ts';
import { createEdgeAuth } from './edge-auth.ts';
import { createGatewayMetrics, RouteFigures, statusClass, type GatewayMetrics } from './metrics.ts';
import { createOps, OPS_PATHS } from './ops.ts';
import { normalizeRequestTarget } from './path-normalize.ts';
import { createPipeline } from './pipeline.ts';
import { forward, limitBody, readBody, RetryableStatus, type Body, type ForwardOptions } from './proxy.ts';
import type { CapturedResponse } from './shadow.ts';
import { createRateLimiter } from './rate-limit.ts';
import type { RedisKeys } from './redis-keys.ts';
import { matchRoute, safeToRetry, type Target } from './route-choice.ts';
import type { RouteSource, RouteTable } from './route-types.ts';
import { createShadow } from './shadow.ts';
import { createRedisRegistry } from '../core/registry/redis-registry.ts';
import { startDiscovery, type Discovery } from './discovery.ts';
import { Cluster, failureKind, isTimeout, neverReached, NoInstanceError, type Endpoint, type EndpointSpec } from './upstreams.ts';
import { isEjected } from './outlier.ts';
import { proxyUpgrade } from './websocket.ts';
import type { TraceSpan, Tracing } from '../core/tracing/tracing.ts';
import { describeChoice, startRequestSpan } from './request-span.ts';

export interface GatewayDeps {
  config: ResolvedConfig;
  routes: RouteSource & { loaded?: boolean; storeReachable?: boolean; onApply?: (fn: (table: RouteTable) => void) => void; setBeforeAck?: (hook: (table: RouteTable) => Promise<void>) => void };
  redis: Redis;
  /** Whether `redis` answers: while it does not, nothing on the request path waits on it. */
  redisHealth: RedisHealth;
  keys: RedisKeys;
  logger: Logger;
  metrics?: GatewayMetrics;
  /** Set when tracing is on (startTracing): each request gets a span. */
  tracing?: Tracing;
}

export interface Gateway {
  server: Server;
  metrics: GatewayMetrics;
  /** legacy and one cluster of instances per service. */
  upstreams: Map<string, Cluster>;
  discovery: Discovery;
  figures: RouteFigures;
  close(): Promise<void>;
}

const BODYLESS = new Set(['GET', 'HEAD', 'OPTIONS', 'DELETE']);
/** Answers another instance may well not give: sent again there when the request is safe to retry. */
const RETRY_STATUSES = [502, 503, 504] as const;

const staticSpec = (url: string): EndpointSpec => ({ id: new URL(url).host, url, source: 'static' });

/** Requests with `Expect: 100-continue` whose client has not been asked for its body yet. */
const awaitingContinue = new WeakSet<ServerResponse>();

function sendError(res: ServerResponse, status: number, code: string, message: string, requestId: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  // A refusal instead of 100 Continue: the body was never asked for, so the connection closes
  // (an unread body must never be read as the next request).
  if (awaitingContinue.has(res)) headers = { ...headers, connection: 'close' };
  const body = JSON.stringify(errorBody(code, message));
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), 'x-request-id': requestId, ...headers });
  res.end(body);
}

/** The client went away before its answer was complete: not an upstream failure (no 5xx, no ejection, no retry). */
class ClientAborted extends Error {
  readonly code = 'CLIENT_ABORTED';
  constructor() {
    super('the client closed the connection');
  }
}

/** Whether the client's connection closed before the answer was complete. */
const clientWentAway = (res: ServerResponse) => res.destroyed && !res.writableFinished;


/** The secrets a gateway cannot start without (CONFIG_INVALID saying how to set the one missing). */
export function gatewaySecrets(config: ResolvedConfig): { jwtSecret: string; adminToken: string } {
  return {
    jwtSecret: requireSecret(config, 'legacyJwtSecret', "the gateway verifies the monolith's tokens with it"),
    adminToken: requireSecret(config, 'adminToken', "the gateway's admin endpoint (/metrics) needs it"),
  };
}

/**
 * The data plane. One request, top to bottom:
 * request id → normalise path → ops endpoints → the pipeline (route table → route match → JWT →
 * rate limit → credential limits, shared with WebSocket upgrades) → fence → choose side (canary
 * stickiness, available instances) → proxy to an instance (retries on another, fallback to
 * legacy) and, in shadow mode, mirror.
 * Plain node:http and undici pools: express costs 3× per request (see the gateway issue's figures).
 */
export function createGateway(deps: GatewayDeps): Gateway {
  const { config, routes, redis, redisHealth, keys, logger, tracing } = deps;
  const g = config.gateway;
  const secrets = gatewaySecrets(config);
  const metrics = deps.metrics ?? createGatewayMetrics();
  const figures = new RouteFigures(redis, keys, redisHealth);
  figures.start();

  // One cluster of instances per upstream: static ones from strangler.yaml, or the registry's.
  const clusterOptions = (healthCheck: ResolvedHealthCheck) => ({
    policy: g.loadBalancer.policy,
    retryBudget: g.loadBalancer.retryBudget,
    slowStart: g.loadBalancer.slowStart,
    localZone: g.zone ? { zone: g.zone, minAvailable: g.loadBalancer.localZoneMinAvailable } : undefined,
    outlier: g.outlierDetection,
    healthCheck,
    connections: g.loadBalancer.connectionsPerInstance,
    metrics,
    logger,
  });
  // Legacy has nowhere to fall back to: with its only instance marked down it is still tried.
  const legacy = new Cluster('legacy', { ...clusterOptions(config.legacy.healthCheck), panic: true }, [staticSpec(config.legacy.url)]);
  const upstreams = new Map<string, Cluster>([['legacy', legacy]]);
  for (const s of config.services) {
    upstreams.set(s.name, new Cluster(s.name, clusterOptions(s.healthCheck), s.discovery === 'static' ? [s.url, ...s.instances].map(staticSpec) : []));
  }
  for (const c of upstreams.values()) c.startHealthChecks();
  const discovery = startDiscovery({
    registry: createRedisRegistry({ redis, keyPrefix: config.redis.keyPrefix, logger }),
    clusters: config.services.filter((s) => s.discovery === 'registry').map((s) => upstreams.get(s.name)!),
    refreshMs: g.loadBalancer.refreshMs,
    allowedHosts: config.registry.allowedHosts,
    logger,
    health: redisHealth,
    outageGraceMs: config.registry.ttlMs + g.loadBalancer.refreshMs,
  });

  const authenticate = createEdgeAuth({
    verify: createTokenVerifier({ issuers: issuersOf(config, secrets.jwtSecret), clockToleranceSeconds: g.auth.clockToleranceSeconds, jwksTimeoutMs: g.jwksTimeoutMs, jwksCacheMaxAgeMs: g.jwksRefreshMs }),
    protectedPrefixes: g.protectedPrefixes,
    publicPaths: g.publicPaths,
    sessionCookie: g.auth.mode === 'session-cookie' ? g.auth.sessionCookie : undefined,
  });
  const storeError = () => metrics.storeErrors.inc({ store: 'rate-limit' });
  const rateLimit = createRateLimiter({ rules: g.rateLimits, redis, keyPrefix: keys.rateLimit, onStoreError: storeError, sync: g.rateLimitSync, health: redisHealth });
  const credentials = createCredentialLimits(g.credentialLimits, g.publicPaths, { redis, keys, sync: g.rateLimitSync, health: redisHealth, onStoreError: storeError });
  const pipeline = createPipeline({ routes, authenticate, rateLimit, credentials, trustedProxies: g.trustedProxies, metrics });
  const shadow = createShadow({ ...g.shadow, ignorePaths: Object.fromEntries(config.services.map((s) => [s.name, s.ignorePaths])) }, { redis, keys, metrics, logger, health: redisHealth });
  const ops = createOps({ routes, redis: redisHealth, metrics, upstreams, isAdmin: createAdminAuth(secrets.adminToken) });

  // Switchover fence: writes to a fenced prefix wait here until a table without the fence
  // arrives (then they are routed by it), or until fenceHoldMs (503). In-flight writes per
  // prefix are counted so that a fenced table is acknowledged only once they have finished.
  const inFlightWrites = new Map<string, number>();
  const held = new Map<string, Array<() => void>>();
  let heldCount = 0;
  routes.onApply?.((table) => {
    for (const [prefix, waiters] of held) {
      if (!table.routes.some((r) => r.prefix === prefix && r.fenced)) {
        held.delete(prefix);
        for (const release of waiters) release();
      }
    }
  });
  routes.setBeforeAck?.(async (table) => {
    const deadline = Date.now() + g.upstreamTimeoutMs;
    for (const r of table.routes.filter((x) => x.fenced)) {
      while ((inFlightWrites.get(r.prefix) ?? 0) > 0 && Date.now() < deadline) await new Promise((ok) => setTimeout(ok, 2));
    }
  });
  const hold = (prefix: string): Promise<boolean> =>
    new Promise((resolve) => {
      if (heldCount >= g.fenceMaxHeld) return resolve(false);
      heldCount++;
      const timer = setTimeout(() => finish(false), g.fenceHoldMs);
      const finish = (released: boolean) => {
        clearTimeout(timer);
        heldCount--;
        const list = held.get(prefix);
        if (list) held.set(prefix, list.filter((f) => f !== onRelease));
        resolve(released);
      };
      const onRelease = () => finish(true);
      held.set(prefix, [...(held.get(prefix) ?? []), onRelease]);
    });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const requestId = pipeline.requestId(req);
    const target = normalizeRequestTarget(req.url ?? '/');
    // SECURITY: a path the gateway cannot read exactly as the upstream will is refused, never guessed.
    if (!target.ok) return sendError(res, 400, 'BAD_INPUT', `the request path is refused: ${target.reason}`, requestId);
    if (OPS_PATHS.has(target.path) && (await ops(target.path, req, res, requestId))) return;
    const span = tracing && startRequestSpan(tracing, req, res, requestId);

    // Awaited only when it is a promise: `await` on a plain value still costs a microtask turn.
    const admitted = pipeline.admit(req, requestId, target);
    const a = admitted instanceof Promise ? await admitted : admitted;
    if (!a.ok) return sendError(res, a.status, a.code, a.message, requestId, a.headers);
    let route = a.route;
    const extraHeaders = a.responseHeaders;

    const method = req.method ?? 'GET';
    const write = method !== 'GET' && method !== 'HEAD' && method !== 'OPTIONS';
    if (route?.fenced && write) {
      const released = await hold(route.prefix);
      if (!released) return sendError(res, 503, 'NOT_READY', `writes to ${route.prefix} are held for a switchover that has not finished; retry shortly`, requestId, { 'retry-after': '1' });
      route = matchRoute(routes.current(), target.matchPath);
    }
    a.route = route; // released from a fence: routed by the table that lifted it
    const length = Number(req.headers['content-length'] ?? 0);
    if (length > g.bodyLimitBytes) return sendError(res, 413, 'PAYLOAD_TOO_LARGE', `the request body is larger than ${g.bodyLimitBytes} bytes`, requestId, { connection: 'close' });

    const service = route ? upstreams.get(route.service) : undefined;
    const retrySafe = safeToRetry(method, req.headers['idempotency-key'] as string | undefined);
    const choice = pipeline.choose(req, a, service, { method, retrySafe, setCookie: true });
    const headers = pipeline.forwardHeaders(req, a);
    if (span) {
      describeChoice(span, method, route, choice);
      headers.traceparent = span.traceparent; // the upstream's spans are children of the gateway's
    }

    // A body that may have to be replayed on legacy, or that names the account of a credential
    // attempt, is read first (bounded); others stream.
    let body: Body = null;
    const hasBody = !BODYLESS.has(method) || length > 0 || req.headers['transfer-encoding'] !== undefined;
    // Expect: 100-continue: every check that may refuse the request (route table, auth, rate and
    // credential limits, fence, declared size) has passed; only now is the client asked for its
    // body. The upstream never sees the Expect header (headers.ts): the gateway answers it.
    if (awaitingContinue.delete(res) && hasBody) res.writeContinue();
    if (hasBody) {
      try {
        body = choice.fallback || (a.credential && credentials.readsBody) ? await readBody(req, g.bodyLimitBytes) : limitBody(req, g.bodyLimitBytes);
      } catch (err) {
        if (clientWentAway(res)) return clientAborted(route?.prefix, choice.target);
        return sendError(res, 413, 'PAYLOAD_TOO_LARGE', (err as Error).message, requestId, { connection: 'close' });
      }
      if (Buffer.isBuffer(body)) delete headers['transfer-encoding'];
    }
    let account: string | null = null;
    if (a.credential && Buffer.isBuffer(body) && (account = credentials.account(body, req.headers['content-type'])) !== null) {
      const checked = pipeline.admitAccount(a, account);
      const refused = checked instanceof Promise ? await checked : checked;
      if (!refused.ok) return sendError(res, refused.status, refused.code, refused.message, requestId, refused.headers);
    }

    const path = `${target.path}${target.query}`;
    // Another instance may get the request after a failure when it is safe to send twice and its body can be replayed.
    const replayable = retrySafe && (body === null || Buffer.isBuffer(body));
    const outbound: ForwardOptions = { method, path, headers, body, timeoutMs: g.upstreamTimeoutMs, requestId, extraHeaders, captureBytes: choice.shadow ? g.shadow.maxBodyBytes : undefined };
    let served: Target = choice.target;
    let answer: CapturedResponse;
    const writePrefix = write && route ? route.prefix : null;
    // A request the route gave the service that the service failed without a 5xx of its own: for canary analysis.
    const tried = { ejected: false };
    if (choice.why === 'no-instance') figures.recordFailure(route!.service, 'noinstance');
    if (writePrefix) inFlightWrites.set(writePrefix, (inFlightWrites.get(writePrefix) ?? 0) + 1);
    try {
      try {
        answer = await send(choice.target === 'service' ? service! : legacy, res, outbound, replayable, tried, span);
      } catch (err) {
        if (!(choice.target === 'service' && choice.fallback && neverReached(err) && !res.headersSent)) throw err;
        metrics.fallbacks.inc({ service: route!.service, reason: (err as { code?: string }).code ?? (err as Error).name });
        span?.addEvent('fallback to legacy', { 'strangler.service': route!.service, 'error.type': (err as { code?: string }).code ?? (err as Error).name });
        span?.setAttributes({ 'strangler.served': 'legacy' });
        figures.recordFailure(route!.service, err instanceof NoInstanceError ? 'noinstance' : 'fallback');
        served = 'legacy';
        answer = await send(legacy, res, outbound, replayable, undefined, span);
      }
      // Answered by another instance after one it tried was ejected: the service still failed it once.
      if (served === 'service' && tried.ejected && answer.status < 500) figures.recordFailure(route!.service, 'ejected');
    } catch (err) {
      // The client went away: not an upstream failure (neither a 502 in the figures canary
      // analysis reads nor a failure of the instance), counted on its own.
      if (err instanceof ClientAborted || clientWentAway(res)) return clientAborted(route?.prefix, served);
      if (res.headersSent) {
        // The answer was under way when the upstream broke off: cut it short.
        record(route?.service, route?.prefix, served, 502, started);
        res.destroy();
        return;
      }
      const status = err instanceof StranglerError && err.code === 'PAYLOAD_TOO_LARGE' ? 413 : isTimeout(err) ? 504 : err instanceof NoInstanceError ? 503 : 502;
      const code = status === 413 ? 'PAYLOAD_TOO_LARGE' : status === 504 ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_UNAVAILABLE';
      const upstreamName = served === 'service' ? route!.service : 'legacy';
      const message =
        status === 413 ? (err as Error).message
        : status === 504 ? `${upstreamName} did not answer within ${g.upstreamTimeoutMs} ms`
        : status === 503 ? `${(err as Error).message}; retry shortly`
        : `${upstreamName} cannot be reached (${(err as { code?: string }).code ?? (err as Error).message})`;
      logger.warn({ err, reqId: requestId, upstream: upstreamName }, 'upstream error');
      span?.fail(err, message);
      // No instance to send to: the service's analysis counts it as that, not as a 503 it answered.
      const noInstance = served === 'service' && err instanceof NoInstanceError;
      if (noInstance) figures.recordFailure(route!.service, 'noinstance');
      record(noInstance ? undefined : route?.service, route?.prefix, served, status, started);
      if (a.credential) credentials.settle(target.matchPath, a.client, account, status);
      return sendError(res, status, code, message, requestId);
    } finally {
      if (writePrefix) inFlightWrites.set(writePrefix, (inFlightWrites.get(writePrefix) ?? 1) - 1);
    }
    record(route?.service, route?.prefix, served, answer.status, started);
    if (a.credential) credentials.settle(target.matchPath, a.client, account, answer.status);
    const mirrorTo = choice.shadow && service && route ? service.pick() : null;
    if (mirrorTo && route) {
      shadow.mirror(route.service, mirrorTo, { method, path, headers, requestId }, Promise.resolve(answer.body ? answer : null), legacy.pick() ?? undefined);
    }
  }

  /**
   * To one instance of the cluster, and on to another (at most loadBalancer.retries more) when
   * the request is safe to retry and the instance could not be reached, broke off, or answered
   * 502/503/504 (then nothing was written to the client yet), as long as the cluster's retry
   * budget allows. Every outcome feeds outlier detection.
   */
  async function send(cluster: Cluster, res: ServerResponse, o: ForwardOptions, replayable: boolean, attempts?: { ejected: boolean }, span?: TraceSpan): Promise<CapturedResponse> {
    const tried = new Set<Endpoint>();
    let endRetry: (() => void) | null = null;
    try {
      for (let attempt = 0; ; attempt++) {
        const endpoint = cluster.pick(tried);
        if (!endpoint) throw new NoInstanceError(cluster.name, cluster.endpoints.length);
        tried.add(endpoint);
        const more = replayable && attempt < g.loadBalancer.retries && cluster.hasAvailable(tried);
        // The budget for the next attempt is taken when this one fails: an answer held back
        // for a retry is one the budget allowed, else it is passed on as it is.
        const next: { end: (() => void) | null } = { end: null };
        const retryOn = more ? (status: number) => (RETRY_STATUSES as readonly number[]).includes(status) && (next.end = cluster.startRetry()) !== null : undefined;
        endpoint.outstanding++;
        try {
          const answer = await forward(endpoint, res, retryOn ? { ...o, retryOn } : o);
          cluster.report(endpoint, { ok: answer.status < 500, status: answer.status });
          return answer;
        } catch (err) {
          if (clientWentAway(res)) {
            next.end?.();
            throw new ClientAborted();
          }
          const kind = failureKind(err);
          if (kind) cluster.report(endpoint, { ok: false, status: err instanceof RetryableStatus ? err.status : undefined, kind });
          if (attempts && isEjected(endpoint.health, Date.now())) attempts.ejected = true;
          if (!(more && !res.headersSent && (err instanceof RetryableStatus || neverReached(err)))) {
            next.end?.();
            throw err;
          }
          if (!next.end) next.end = cluster.startRetry();
          if (!next.end) throw err; // over budget: the failure stands (a safe request may still fall back to legacy)
          endRetry?.();
          endRetry = next.end;
          metrics.retries.inc({ service: cluster.name, reason: kind ?? (err as { code?: string }).code ?? 'error' });
          span?.addEvent('retry on another instance', { 'strangler.upstream': cluster.name, 'server.address': endpoint.id, 'error.type': kind ?? (err as { code?: string }).code ?? 'error', 'http.response.status_code': err instanceof RetryableStatus ? err.status : undefined });
        } finally {
          endpoint.outstanding--;
        }
      }
    } finally {
      endRetry?.();
    }
  }

  function clientAborted(prefix: string | undefined, target: Target): void {
    metrics.clientAborts.inc({ prefix: prefix ?? 'unrouted', target });
  }

  function record(service: string | undefined, prefix: string | undefined, target: Target, status: number, started: number) {
    const ms = performance.now() - started;
    const label = prefix ?? 'unrouted';
    metrics.requests.labels(label, target, statusClass(status)).value++;
    metrics.latency.observe(metrics.latency.labels(label, target), ms / 1000);
    if (service) figures.record(service, target, status, ms);
  }

  const serve = (req: IncomingMessage, res: ServerResponse) => {
    handle(req, res).catch((err) => {
      logger.error({ err }, 'gateway request failed');
      sendError(res, 500, 'INTERNAL', 'internal gateway error', String(res.getHeader('x-request-id') ?? ''));
    });
  };
  // SECURITY: the limits on what a client may send and how slowly (gateway.maxHeaderBytes → 431,
  // headersTimeoutMs and requestTimeoutMs → 408, slowloris and slow uploads), checked often
  // enough that a connection is cut soon after its deadline.
  const checkEveryMs = Math.min(30_000, Math.max(100, Math.floor(Math.min(g.headersTimeoutMs, g.requestTimeoutMs || Infinity) / 4)));
  const server = createServer(
    { maxHeaderSize: g.maxHeaderBytes, headersTimeout: g.headersTimeoutMs, requestTimeout: g.requestTimeoutMs, keepAliveTimeout: g.keepAliveTimeoutMs, connectionsCheckingInterval: checkEveryMs },
    serve,
  );
  // Expect: 100-continue (curl for bodies over 1 MB, .NET, Java): handled like any request, the
  // 100 sent once it may proceed (handle), a refusal sent instead without reading the body.
  server.on('checkContinue', (req, res) => {
    awaitingContinue.add(res);
    serve(req, res);
  });
  server.on('upgrade', (req, socket, head) => {
    // SECURITY: only WebSocket is tunnelled. Another protocol (h2c) would open a tunnel to the
    // upstream past every rule of the gateway (h2c smuggling): such a request is served as a
    // plain one, its Upgrade ignored (RFC 9110 §7.8), on a connection closed after it.
    if (!/(^|,)\s*websocket\s*(,|$)/i.test(req.headers.upgrade ?? '')) {
      const res = new ServerResponse(req);
      res.shouldKeepAlive = false;
      res.assignSocket(socket as Socket);
      res.on('finish', () => (socket as Socket).destroySoon());
      // Its body has already been taken off the connection with the head: refused, not half-read.
      if (head.length > 0 || Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined) {
        return sendError(res, 400, 'BAD_INPUT', `an Upgrade to "${req.headers.upgrade}" with a body is not accepted; send the request without Upgrade`, pipeline.requestId(req));
      }
      return serve(req, res);
    }
    proxyUpgrade(req, socket, head, { pipeline, upstreams, logger, record, noInstance: (service) => figures.recordFailure(service, 'noinstance'), tracing }).catch((err) => {
      logger.warn({ err }, 'websocket upgrade failed');
      socket.destroy();
    });
  });

  return {
    server,
    metrics,
    upstreams,
    discovery,
    figures,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), 5_000).unref();
      });
      await figures.stop();
      rateLimit.stop();
      await rateLimit.flush();
      await credentials.stop();
      await discovery.stop();
      await Promise.all([...upstreams.values()].map((u) => u.close()));
    },
  };
}
