import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import proxyaddr from 'proxy-addr';
import type { Identity } from './token-verifier.ts';
import { CANARY_COOKIE, CANARY_COOKIE_ATTRIBUTES, newCanaryCookieValue, readCanaryCookie } from './canary.ts';
import type { CredentialLimits } from './credential-limit.ts';
import type { AuthOutcome } from './edge-auth.ts';
import { traceparentFor, upstreamHeaders, validRequestId } from './headers.ts';
import type { GatewayMetrics } from './metrics.ts';
import type { NormalizedPath } from './path-normalize.ts';
import { rateLimitHeaders, type RateDecision } from './rate-limit.ts';
import { chooseTarget, matchRoute, type Choice } from './route-choice.ts';
import type { Route, RouteSource } from './route-types.ts';
import type { Cluster } from './upstreams.ts';

type Target = Extract<NormalizedPath, { ok: true }>;

/** A request the pipeline let through, with what the steps after it need. */
export interface Admitted {
  ok: true;
  requestId: string;
  target: Target;
  route: Route | null;
  identity: Identity | undefined;
  /** The direct peer's address. */
  remote: string;
  /** Whether the peer is a trusted proxy (its X-Forwarded-* are read). */
  viaProxy: boolean;
  /** The client's address (behind a trusted proxy, the one it names); set when a limit is keyed by it. */
  client: string;
  /** Headers the gateway adds to the answer (RateLimit, a canary cookie). */
  responseHeaders: Record<string, string | string[]>;
  /** A credential attempt: counted per address here, per account once its body is read. */
  credential: boolean;
}

/** A request the pipeline refused, and how to answer it. */
export interface Refused {
  ok: false;
  status: number;
  code: string;
  message: string;
  requestId: string;
  headers: Record<string, string>;
}

export type Admission = Admitted | Refused;

export interface PipelineOptions {
  routes: RouteSource & { loaded?: boolean };
  authenticate: (matchPath: string, authorization: string | undefined, cookie?: string) => AuthOutcome | Promise<AuthOutcome>;
  rateLimit: (matchPath: string, clientKey: string) => RateDecision | Promise<RateDecision>;
  credentials: CredentialLimits;
  trustedProxies: string[];
  metrics: GatewayMetrics;
}

const refuse = (status: number, code: string, message: string, requestId: string, headers: Record<string, string> = {}): Refused => ({ ok: false, status, code, message, requestId, headers });

/**
 * The request pipeline every request goes through before it is proxied, plain HTTP and
 * WebSocket upgrades alike: request id → (the caller normalises the path) → route table present
 * → route → JWT → client address (trusted proxies) → rate limit (per user, else per address) →
 * credential attempts per address; then the headers sent upstream and the side (legacy or
 * service) are chosen by the same functions for both. Each step answers synchronously unless it
 * has to wait (a token to verify, a count to share), so a request that needs neither takes no
 * promise turn.
 */
export function createPipeline(o: PipelineOptions) {
  const trust = proxyaddr.compile(o.trustedProxies);
  const trustsProxies = o.trustedProxies.length > 0;

  /** The client's X-Request-Id when it is a safe token, else a new one. */
  function requestId(req: IncomingMessage): string {
    return validRequestId(req.headers['x-request-id']) ?? randomUUID();
  }

  function admit(req: IncomingMessage, id: string, target: Target): Admission | Promise<Admission> {
    if (!(o.routes.loaded ?? true)) return refuse(503, 'NOT_READY', 'the gateway has no route table yet (control database unreachable and no snapshot); retry shortly', id, { 'retry-after': '1' });
    const remote = req.socket.remoteAddress ?? '';
    // SECURITY: X-Forwarded-For is read only from a trusted proxy (gateway.trustedProxies).
    const viaProxy = trustsProxies && trust(remote, 0);
    const a: Admitted = { ok: true, requestId: id, target, route: matchRoute(o.routes.current(), target.matchPath), identity: undefined, remote, viaProxy, client: remote, responseHeaders: {}, credential: false };
    // Each step goes on synchronously unless the one before had to wait (no closure, no microtask turn).
    const authed = o.authenticate(target.matchPath, req.headers.authorization, req.headers.cookie);
    return authed instanceof Promise ? authed.then((auth) => limit(req, a, auth)) : limit(req, a, authed);
  }

  function limit(req: IncomingMessage, a: Admitted, auth: AuthOutcome): Admission | Promise<Admission> {
    if (!auth.ok) {
      if (auth.code === 'NOT_READY') return refuse(503, 'NOT_READY', auth.message, a.requestId, { 'retry-after': '1' });
      return refuse(401, 'UNAUTHENTICATED', auth.message, a.requestId, { 'www-authenticate': `Bearer error="invalid_token", error_description="${auth.message.replace(/"/g, "'")}"` });
    }
    a.identity = auth.identity;
    a.credential = o.credentials.applies(req.method ?? 'GET', a.target.matchPath);
    if (a.viaProxy && (!a.identity || a.credential)) a.client = proxyaddr(req, trust);
    const limited = o.rateLimit(a.target.matchPath, a.identity ? `user:${a.identity.sub}` : `ip:${a.client}`);
    return limited instanceof Promise ? limited.then((d) => afterRateLimit(a, d)) : afterRateLimit(a, limited);
  }

  function afterRateLimit(a: Admitted, decision: RateDecision): Admission | Promise<Admission> {
    if (decision) {
      const headers = rateLimitHeaders(decision);
      if (decision.limited) {
        o.metrics.rateLimited.inc({ prefix: a.route?.prefix ?? '/' });
        return refuse(429, 'RATE_LIMITED', `too many requests; retry in ${headers['retry-after']} s`, a.requestId, headers);
      }
      a.responseHeaders = headers;
    }
    if (!a.credential) return a;
    const d = o.credentials.checkAddress(a.target.matchPath, a.client);
    return d instanceof Promise ? d.then((x) => credentialDecision(a, x, 'address')) : credentialDecision(a, d, 'address');
  }

  function credentialDecision(a: Admitted, d: RateDecision, by: 'address' | 'account'): Admission {
    if (!d?.limited) return a;
    o.metrics.credentialLimited.inc({ path: a.target.matchPath, limit: by });
    const headers = rateLimitHeaders(d);
    return refuse(429, 'RATE_LIMITED', `too many failed attempts ${by === 'address' ? 'from this address' : 'for this account'}; retry in ${headers['retry-after']} s`, a.requestId, headers);
  }

  return {
    requestId,
    /** Every step up to the rate limits; a refusal says how to answer. */
    admit,
    /** A credential attempt's per-account step, once its body has been read (plain requests only). */
    admitAccount(a: Admitted, account: string): Admission | Promise<Admission> {
      const d = o.credentials.checkAccount(a.target.matchPath, account);
      return d instanceof Promise ? d.then((x) => credentialDecision(a, x, 'account')) : credentialDecision(a, d, 'account');
    },

    /** The headers sent upstream: the client's minus hop-by-hop and identity ones, X-Forwarded-* by the trusted-proxy rule (a trusted proxy's Proto and Host kept). */
    forwardHeaders(req: IncomingMessage, a: Admitted): Record<string, string | string[]> {
      return upstreamHeaders(req.headers, {
        requestId: a.requestId,
        forwardedFor: a.viaProxy && req.headers['x-forwarded-for'] ? `${req.headers['x-forwarded-for']}, ${a.remote}` : a.remote,
        proto: a.viaProxy && typeof req.headers['x-forwarded-proto'] === 'string' ? req.headers['x-forwarded-proto'] : 'http',
        host: a.viaProxy && typeof req.headers['x-forwarded-host'] === 'string' ? req.headers['x-forwarded-host'] : req.headers.host,
        identity: a.identity,
        traceparent: traceparentFor(req.headers.traceparent),
      });
    },

    /**
     * Legacy or the service: canary users stick by their token's subject, else by the canary
     * cookie (a new one is set when `setCookie` and the client has none).
     */
    choose(req: IncomingMessage, a: Admitted, service: Cluster | undefined, request: { method: string; retrySafe: boolean; setCookie: boolean }): Choice {
      let stickyKey: string | null = a.identity?.sub ?? null;
      if (a.route?.mode === 'canary' && !stickyKey) {
        stickyKey = readCanaryCookie(req.headers.cookie);
        if (!stickyKey && request.setCookie) {
          stickyKey = newCanaryCookieValue();
          a.responseHeaders['set-cookie'] = `${CANARY_COOKIE}=${stickyKey}; ${CANARY_COOKIE_ATTRIBUTES}`;
        }
      }
      return chooseTarget(service ? a.route : null, { method: request.method, stickyKey, noInstance: service ? !service.hasAvailable() : false, retrySafe: request.retrySafe });
    },
  };
}

export type Pipeline = ReturnType<typeof createPipeline>;
