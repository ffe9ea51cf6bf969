import { join } from 'node:path';
import type { ResolvedConfig } from '../../core/config/load.ts';
import { StranglerError } from '../../core/errors.ts';
import { HEALTH_CHECK_USER_AGENT, type ResolvedHealthCheck } from '../../core/health-check.ts';
import { CANARY_COOKIE, CANARY_COOKIE_ATTRIBUTES, CANARY_COOKIE_VALUE } from '../canary.ts';
import { IDENTITY_HEADERS } from '../headers.ts';
import type { IssuerSpec } from '../token-verifier.ts';
import { LATENCY_BOUNDS_MS } from '../metrics.ts';
import { STRANGLER_LUA } from './lua-script.ts';

/** Where the rendered files live and what the frontend listens on. */
export interface HaproxyLayout {
  /** Directory of haproxy.cfg, strangler.lua, routes.map and the Runtime API socket. */
  runDir: string;
  port: number;
  host: string;
}

export interface RenderedHaproxy {
  /** File name (inside runDir) → content. */
  files: Record<string, string>;
  cfgFile: string;
  socket: string;
  routesMap: string;
  /** The map the cfg routes plain requests by (map_beg on the lowercased path + "/"). */
  fastMap: string;
  /** Where the agent says it is alive (`agent <epoch seconds>`), for /healthz. */
  agentMap: string;
  /**
   * The JWKS keys HAProxy loaded (their PEM files are read once, at start), each under its id in
   * `liveKeysMap`: a key is accepted only while its id is in that map, so the agent revokes a key
   * its issuer stopped publishing by deleting the id, without a reload.
   */
  jwksKeys: Array<{ id: string; issuer: string; kid: string | null; pem: string }>;
  liveKeysMap: string;
}

/** Seconds without a check-in from the agent after which /healthz answers 503. */
export const AGENT_STALE_S = 5;

/** The stick table counting writes in flight per route prefix. */
export const INFLIGHT_TABLE = 'inflight';

/** The stick table the per-route figures are counted in. */
export const FIGURES_TABLE = 'figures';

/** Server slots per registry-discovered service (instances beyond them are not routed to, and logged). */
export const REGISTRY_SLOTS = 16;
export const REGISTRY_SLOT_PREFIX = 'r';

/** Names of the backends: one for legacy, two per service (with legacy as backup, and without). */
export const LEGACY_BACKEND = 'legacy';
export const serviceBackend = (service: string) => `svc_${service}`;
export const strictServiceBackend = (service: string) => `svc_${service}_strict`;

/** A value quoted for haproxy.cfg (inside double quotes: backslash, quote and dollar escaped). */
function q(value: string): string {
  if (/[\r\n\0]/.test(value)) throw new StranglerError(`a value for haproxy.cfg contains a line break: ${JSON.stringify(value.slice(0, 40))}`, 'CONFIG_INVALID');
  return `"${value.replace(/[\\"$]/g, (c) => `\\${c}`)}"`;
}

/** A JavaScript value as a Lua literal (strings, numbers, booleans, arrays, plain objects). */
function lua(value: unknown): string {
  if (value === null || value === undefined) return 'nil';
  if (typeof value === 'string') return JSON.stringify(value).replace(/\\u([0-9a-f]{4})/gi, (_, h: string) => `\\u{${h}}`);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return `{ ${value.map(lua).join(', ')} }`;
  return `{ ${Object.entries(value as Record<string, unknown>)
    .map(([k, v]) => `[${lua(k)}] = ${lua(v)}`)
    .join(', ')} }`;
}

const norm = (p: string) => p.toLowerCase().replace(/\/+$/, '') || '/';

/** An HTTP check's expected statuses as HAProxy's http-check expect. */
function expectLine(expect: ResolvedHealthCheck['expect']): string {
  if (typeof expect === 'number') return `http-check expect status ${expect}`;
  if (/^[1-5]xx$/.test(expect)) return `http-check expect rstatus ^${expect[0]}[0-9][0-9]$`;
  const [lo, hi] = expect.includes('-') ? expect.split('-').map(Number) : [Number(expect), Number(expect)];
  const statuses = Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);
  return `http-check expect rstatus ^(${statuses.join('|')})$`;
}

/** One server line per instance URL. SECURITY: https upstreams are verified against the system CAs. */
function serverLine(name: string, url: string, check: ResolvedHealthCheck, extra = ''): string {
  const u = new URL(url);
  const port = u.port || (u.protocol === 'https:' ? '443' : '80');
  const tls = u.protocol === 'https:' ? ` ssl verify required ca-file /etc/ssl/certs/ca-certificates.crt sni str(${u.hostname})` : '';
  const checks = check.enabled ? ` check inter ${check.intervalMs} rise ${check.healthyThreshold} fall ${check.unhealthyThreshold}` : '';
  return `  server ${name} ${u.hostname}:${port}${tls}${checks}${extra}`;
}

function checkLines(check: ResolvedHealthCheck): string[] {
  if (!check.enabled) return [];
  return ['  option httpchk', `  http-check send meth GET uri ${check.path} hdr user-agent ${HEALTH_CHECK_USER_AGENT}`, `  ${expectLine(check.expect)}`, `  timeout check ${check.timeoutMs}`];
}

/** A public key of a JWKS issuer, fetched by the agent before rendering (jwt_verify cannot fetch). */
export interface JwksKey {
  kid: string | null;
  pem: string;
}

/**
 * The keys HAProxy verifies with, natively (jwt_verify): an HMAC secret, or a public key in a PEM
 * file, one entry per key (a JWKS issuer: one per key of its set, matched by `kid`).
 */
/** liveId: a JWKS key's id in the live-keys map (accepted only while it is there). */
type NativeKey = { issuer: IssuerSpec; key: string; kid: string | null; pem?: string; file?: string; liveId?: string };
function nativeKeys(issuers: IssuerSpec[], jwks: Record<string, JwksKey[]>, runDir: string): NativeKey[] {
  return issuers.flatMap((i, n): NativeKey[] => {
    if (i.kind === 'secret') return [{ issuer: i, key: i.secret, kid: null }];
    if (i.kind === 'pem') return [{ issuer: i, key: join(runDir, `issuer-${n}.pem`), kid: null, pem: i.publicKey, file: `issuer-${n}.pem` }];
    return (jwks[i.name] ?? []).map((k, j) => ({ issuer: i, key: join(runDir, `issuer-${n}-${j}.pem`), kid: k.kid, pem: k.pem, file: `issuer-${n}-${j}.pem`, liveId: `issuer-${n}-${j}` }));
  });
}

/**
 * Pure: haproxy.cfg, the Lua and an empty routes map for a strangler.yaml (the HAProxy engine).
 * The route table is not in the files: the agent fills routes.map through the Runtime API, so a
 * route change never reloads HAProxy.
 */
export function renderHaproxy(config: ResolvedConfig, secrets: { adminToken: string; issuers: IssuerSpec[]; jwks?: Record<string, JwksKey[]> }, layout: HaproxyLayout): RenderedHaproxy {
  const g = config.gateway;
  const { runDir } = layout;
  const cfgFile = join(runDir, 'haproxy.cfg');
  const socket = join(runDir, 'haproxy.sock');
  const routesMap = join(runDir, 'routes.map');
  const fastMap = join(runDir, 'fast.map');
  const agentMap = join(runDir, 'agent.map');
  const liveKeysMap = join(runDir, 'jwks-keys.map');
  const luaFile = join(runDir, 'strangler.lua');
  if (g.auth.mode === 'session-cookie' && /[^A-Za-z0-9_.-]/.test(g.auth.sessionCookie)) throw new StranglerError(`gateway.auth.sessionCookie "${g.auth.sessionCookie}": expected letters, digits, "_", "." or "-"`, 'CONFIG_INVALID');
  const keys = nativeKeys(secrets.issuers, secrets.jwks ?? {}, runDir);
  const files: Record<string, string> = {};
  for (const k of keys) if (k.file && k.pem) files[k.file] = k.pem;
  const jwksKeys = keys.flatMap((k) => (k.liveId ? [{ id: k.liveId, issuer: k.issuer.name, kid: k.kid, pem: k.pem! }] : []));
  if (jwksKeys.length) files['jwks-keys.map'] = jwksKeys.map((k) => `${k.id} 1\n`).join('');

  const rateRules = g.rateLimits.map((r, n) => ({ ...r, prefix: norm(r.prefix), table: `rl_${n}` }));
  const luaConfig = {
    routesMap,
    legacyBackend: LEGACY_BACKEND,
    services: Object.fromEntries(config.services.map((s) => [s.name, { backend: serviceBackend(s.name), strictBackend: strictServiceBackend(s.name) }])),
    fastMap,
    canaryCookie: CANARY_COOKIE,
    canaryCookieAttributes: CANARY_COOKIE_ATTRIBUTES,
    fenceHoldMs: g.fenceHoldMs,
    fenceMaxHeld: g.fenceMaxHeld,
  };
  files['strangler.lua'] = `-- Rendered by strangler from ${config.file ?? 'defaults'}; do not edit (strangler haproxy --render-only).\nlocal CONFIG = ${lua(luaConfig)}\n${STRANGLER_LUA}`;
  files['routes.map'] = '';
  files['fast.map'] = '';
  files['agent.map'] = 'agent 0\n';
  // Keys end with "/" so that map_beg's longest match is a match on segment boundaries (mp is the lowercased path + "/").
  const slash = (p: string) => (p === '/' ? '/' : `${p}/`);
  files['ratelimits.map'] = rateRules.map((r) => `${slash(r.prefix)} ${r.table}\n`).join('');

  const tol = g.auth.clockToleranceSeconds;
  const jwt: string[] = [
    '  # JWT at the edge (gateway/token-verifier.ts): the algorithm must be one of the issuer\'s own, never none;',
    '  # the signature, iss (when the issuer names one), aud, exp (required) and nbf are checked natively.',
    '  http-request set-var(txn.bearer) http_auth_bearer',
    '  http-request set-var(txn.now) date if { var(txn.bearer) -m found }',
    '  http-request set-var(txn.jwt_alg) var(txn.bearer),jwt_header_query(\'$.alg\') if { var(txn.bearer) -m found }',
    '  http-request set-var(txn.jwt_iss) var(txn.bearer),jwt_payload_query(\'$.iss\') if { var(txn.jwt_alg) -m found }',
    '  http-request set-var(txn.jwt_exp) var(txn.bearer),jwt_payload_query(\'$.exp\',int) if { var(txn.jwt_alg) -m found }',
    '  http-request set-var(txn.jwt_nbf) var(txn.bearer),jwt_payload_query(\'$.nbf\',int) if { var(txn.jwt_alg) -m found }',
    // Each claim query decodes the token again: the kid only when a key is chosen by it (a JWKS issuer's).
    ...(keys.some((k) => k.kid) ? ['  http-request set-var(txn.jwt_kid) var(txn.bearer),jwt_header_query(\'$.kid\') if { var(txn.jwt_alg) -m found }'] : []),
    `  acl jwt_live var(txn.jwt_exp),add(${tol}),sub(txn.now) -m int gt 0`,
    `  acl jwt_early var(txn.jwt_nbf),sub(${tol}),sub(txn.now) -m int gt 0`,
  ];
  for (const { issuer: i, key, kid, liveId } of keys) {
    const name = i.name.replace(/[^A-Za-z0-9_.-]/g, '_');
    // SECURITY: each key only with its issuer's own algorithms (an HMAC secret never with RS*, a public key never with HS*).
    const conds = [
      '!{ var(txn.jwt_issuer) -m found }',
      `{ var(txn.jwt_alg) -m str ${i.algorithms.join(' ')} }`,
      kid ? `{ var(txn.jwt_kid) -m str ${q(kid)} }` : '',
      // SECURITY: a JWKS key only while its issuer still publishes it (the agent deletes a revoked one from the map).
      liveId ? `{ str(${liveId}),map(${liveKeysMap}) -m found }` : '',
      i.issuer ? `{ var(txn.jwt_iss) -m str ${q(i.issuer)} }` : '',
      i.audience ? `{ var(txn.bearer),jwt_payload_query('$.aud') -m str ${q(i.audience)} }` : '',
      'jwt_live !jwt_early',
      `{ var(txn.bearer),jwt_verify(txn.jwt_alg,${q(key)}) -m int 1 }`,
    ].filter(Boolean);
    jwt.push(`  http-request set-var(txn.jwt_issuer) str(${name}) if ${conds.join(' ')}`);
  }
  for (const i of secrets.issuers) {
    const name = i.name.replace(/[^A-Za-z0-9_.-]/g, '_');
    // The identity as the Node engine forwards it: the user id claim, the email when a string, iss else the issuer's name.
    jwt.push(`  http-request set-var(txn.jwt_sub) var(txn.bearer),jwt_payload_query('$.${i.userIdClaim.replace(/[^A-Za-z0-9_]/g, '')}') if { var(txn.jwt_issuer) -m str ${name} }`);
  }
  jwt.push("  http-request set-var(txn.jwt_email) var(txn.bearer),jwt_payload_query('$.email') if { var(txn.jwt_issuer) -m found }");
  jwt.push('  http-request set-var(txn.jwt_issuer) var(txn.jwt_iss) if { var(txn.jwt_issuer) -m found } { var(txn.jwt_iss) -m found }');

  const trusted = g.trustedProxies.length ? `acl trusted_proxy src ${g.trustedProxies.join(' ')}` : 'acl trusted_proxy always_false';
  const rate: string[] = [];
  for (const r of rateRules) {
    const when = `{ var(txn.rl_rule) -m str ${r.table} }`;
    const retry = Math.max(1, Math.ceil(r.windowMs / 1000));
    rate.push(`  http-request track-sc0 var(txn.rl_key) table ${r.table} if ${when}`);
    rate.push(
      `  http-request return status 429 content-type "application/json; charset=utf-8" string ${q(`{"error":{"code":"RATE_LIMITED","message":"too many requests; retry in ${retry} s"}}`)} hdr retry-after ${retry} hdr ratelimit-policy ${q(`${r.limit};w=${retry}`)} hdr ratelimit-limit ${r.limit} hdr ratelimit-remaining 0 if ${when} { sc0_http_req_rate(${r.table}) gt ${r.limit} }`,
    );
  }

  // Per-route figures for canary analysis (metrics.ts RouteFigures), counted natively in a stick
  // table keyed "<service>:<side>:<latency bucket>" (the bucket of the ms from admission to the
  // response head, by the ranges of latency.map: LATENCY_BOUNDS_MS, then one past the last): gpc0
  // requests, gpc1 5xx. One key a request keeps it to a handful of rules; the agent sums the keys
  // of a service and side (show table) into Redis.
  files['latency.map'] = LATENCY_BOUNDS_MS.map((le, i) => `${i === 0 ? 0 : LATENCY_BOUNDS_MS[i - 1] + 1}:${le} ${i}\n`).join('');
  const figureRules = [
    "  http-response set-var(txn.fig_side) str(legacy) if { var(txn.fig_side) -m str service } { srv_name legacy }",
    `  http-response set-var-fmt(txn.fig_key) "%[var(txn.fig_svc)]:%[var(txn.fig_side)]:%[date(0,ms),sub(txn.fig_t0),map_int(${join(runDir, 'latency.map')},${LATENCY_BOUNDS_MS.length})]" if { var(txn.fig_svc) -m found }`,
    `  http-response track-sc2 var(txn.fig_key) table ${FIGURES_TABLE}`,
    '  http-response sc-inc-gpc(0,2)',
    '  http-response sc-inc-gpc(1,2) if { status ge 500 }',
  ];
  const upstreamHost = (url: string) => new URL(url).host;
  const backends: string[] = [];
  const legacy = config.legacy;
  backends.push(
    `backend ${LEGACY_BACKEND}`,
    `  http-request set-header host ${upstreamHost(legacy.url)}`,
    ...checkLines(legacy.healthCheck),
    serverLine('legacy', legacy.url, legacy.healthCheck),
    '',
  );
  const od = g.outlierDetection;
  // Passive outlier detection (Envoy's consecutive_5xx): consecutive failures mark an instance down until its checks pass again.
  const observe = ` observe layer7 error-limit ${od.consecutiveFailures} on-error mark-down`;
  for (const s of config.services) {
    const c = s.healthCheck;
    // discovery: registry: empty slots the agent points at registered instances (set server addr / state) without a reload.
    const servers =
      s.discovery === 'static'
        ? [s.url, ...s.instances].map((u, n) => serverLine(`i${n}`, u, c, observe))
        : [`  server-template ${REGISTRY_SLOT_PREFIX} 1-${REGISTRY_SLOTS} 127.0.0.1:1 disabled${c.enabled ? ` check inter ${c.intervalMs} rise ${c.healthyThreshold} fall ${c.unhealthyThreshold}` : ''}${observe}`];
    const policy = g.loadBalancer.policy === 'least-outstanding' ? 'leastconn' : 'roundrobin';
    const common = [`  balance ${policy}`, `  http-request set-header host ${upstreamHost(s.url)}`, ...checkLines(s.healthCheck), `  retries ${g.loadBalancer.retries}`, '  option redispatch 1', '  retry-on conn-failure empty-response'];
    // A canary user, or a safe request, whose service has no instance up is served by legacy (Node: no-instance / fallback).
    backends.push(`backend ${serviceBackend(s.name)}`, ...common, ...servers, serverLine('legacy', legacy.url, legacy.healthCheck, ' backup'), '');
    backends.push(`backend ${strictServiceBackend(s.name)}`, ...common, ...servers, '');
  }
  backends.push(`backend ${INFLIGHT_TABLE}`, '  stick-table type string len 200 size 10k expire 1h store conn_cur', '');
  backends.push(`backend ${FIGURES_TABLE}`, `  stick-table type string len 200 size 10k store gpc(2)`, '');
  for (const r of rateRules) backends.push(`backend ${r.table}`, `  stick-table type string len 200 size 1m expire ${r.windowMs}ms store http_req_rate(${r.windowMs}ms)`, '');

  // Upgrade is kept for a WebSocket handshake (removed above for any other).
  const hop = ['keep-alive', 'te', 'trailer', 'proxy-authorization', 'proxy-connection', 'proxy', 'expect'];
  const cfg = [
    `# Rendered by strangler from ${config.file ?? 'defaults'} (strangler haproxy --render-only); do not edit.`,
    '# The route table is not here: the strangler agent fills routes.map through the Runtime API (no reload).',
    'global',
    `  stats socket ${socket} mode 600 level admin`, // SECURITY: admin level, owner-only: whoever reaches it changes the routes
    '  stats timeout 10s',
    `  nbthread ${g.haproxy.threads}`,
    `  lua-load ${luaFile}`,
    '  tune.bufsize ' + (g.maxHeaderBytes + 8192),
    '  tune.maxrewrite 8192',
    `  tune.http.maxhdr 200`,
    '',
    'defaults',
    '  mode http',
    '  option http-keep-alive',
    '  timeout connect 2s',
    `  timeout client ${Math.max(g.keepAliveTimeoutMs, g.headersTimeoutMs)}`,
    `  timeout http-request ${g.headersTimeoutMs}`,
    `  timeout http-keep-alive ${g.keepAliveTimeoutMs}`,
    `  timeout server ${g.upstreamTimeoutMs}`,
    '  timeout tunnel 1h',
    '',
    'frontend strangler',
    `  bind ${layout.host}:${layout.port}`,
    `  ${trusted}`,
    '  # Request id: the client\'s when it is a safe token, else a new one.',
    '  http-request set-var(txn.request_id) req.hdr(x-request-id) if { req.hdr_cnt(x-request-id) eq 1 } { req.hdr(x-request-id) -m reg ^[A-Za-z0-9._:-]{1,128}$ }',
    '  http-request set-var(txn.request_id) uuid(4) unless { var(txn.request_id) -m found }',
    '  # SECURITY: ops endpoints; /metrics needs the admin token (like the Node engine\'s /metrics).',
    '  # /healthz and /readyz: 503 once the agent has not checked in for AGENT_STALE_S seconds (it died: this HAProxy no longer follows route changes, so a balancer must stop sending to it).',
    `  http-request set-var(txn.agent_age) date,sub(txn.agent_at) if { path /healthz /readyz } { str(agent),map(${agentMap}),set-var(txn.agent_at) -m found }`,
    `  http-request return status 200 content-type application/json string '{"ok":true}' if { path /healthz /readyz } { var(txn.agent_age) -m int le ${AGENT_STALE_S} }`,
    `  http-request return status 503 content-type application/json string '{"error":{"code":"NOT_READY","message":"the strangler agent of this HAProxy is not running: its route table may be stale"}}' if { path /healthz /readyz }`,
    `  http-request use-service prometheus-exporter if { path /metrics } { req.hdr(authorization) -m str ${q(`Bearer ${secrets.adminToken}`)} }`,
    '  http-request return status 401 content-type application/json string \'{"error":{"code":"UNAUTHENTICATED","message":"/metrics needs the gateway admin token"}}\' if { path /metrics }',
    `  # Bodies over gateway.bodyLimitBytes are refused on their declared length, before any is read.`,
    `  http-request return status 413 content-type application/json string '{"error":{"code":"PAYLOAD_TOO_LARGE","message":"the request body is larger than ${g.bodyLimitBytes} bytes"}}' if { req.hdr_val(content-length) gt ${g.bodyLimitBytes} }`,
    '  http-request return status 417 content-type application/json string \'{"error":{"code":"BAD_INPUT","message":"only Expect: 100-continue is supported"}}\' if { req.hdr(expect) -m found } !{ req.hdr(expect) -i -m str 100-continue }',
    '  # SECURITY: a non-websocket Upgrade (h2c) is never tunnelled; with a body it is refused (smuggling).',
    '  acl other_upgrade req.hdr(upgrade) -m found',
    '  acl websocket_upgrade req.hdr(upgrade) -i -m str websocket',
    '  acl has_body req.hdr_val(content-length) gt 0',
    '  acl has_body req.hdr(transfer-encoding) -m found',
    '  http-request return status 400 content-type application/json string \'{"error":{"code":"BAD_INPUT","message":"an Upgrade other than websocket cannot carry a body"}}\' if other_upgrade !websocket_upgrade has_body',
    '  http-request del-header upgrade unless websocket_upgrade',
    '  # The path: a plain one (nothing to normalise) is matched as it is; any other goes through the Lua port of path-normalize.ts.',
    '  acl tricky_path path -m sub % ; \\\\ // /.',
    '  http-request set-var(txn.mp) path,lower,concat(,,/) unless tricky_path',
    `  http-request set-var(txn.fast) var(txn.mp),map_beg(${fastMap}) unless tricky_path`,
    '  http-request lua.strangler_path if tricky_path || { req.hdr_cnt(connection) gt 0 } !{ req.fhdr(connection) -i -m reg ^(keep-alive|close)$ }',
    ...jwt,
    '  # SECURITY: an id with a line break or other control character never reaches a header (token-verifier.ts refuses it too).',
    '  http-request unset-var(txn.jwt_issuer) if { var(txn.jwt_issuer) -m found } !{ var(txn.jwt_sub) -m found }',
    '  http-request unset-var(txn.jwt_issuer) if { var(txn.jwt_sub) -m reg [[:cntrl:]] } || { var(txn.jwt_sub) -m len 0 }',
    '  http-request unset-var(txn.jwt_sub) unless { var(txn.jwt_issuer) -m found }',
    '  http-request unset-var(txn.jwt_email) if !{ var(txn.jwt_issuer) -m found } || { var(txn.jwt_email) -m reg [[:cntrl:]] }',
    '  # Protected prefixes need a verified token (except the public paths; in session-cookie mode, a session cookie without a token goes on unvouched).',
    `  acl protected var(txn.mp) -m beg ${g.protectedPrefixes.map((p) => slash(norm(p))).join(' ') || '/nothing-is-protected/'}`,
    g.publicPaths.length ? `  acl public_path var(txn.mp) -m str ${g.publicPaths.map((p) => slash(norm(p))).join(' ')}` : '  acl public_path always_false',
    g.auth.mode === 'session-cookie' ? `  acl session_only !{ var(txn.bearer) -m found } { req.cook(${g.auth.sessionCookie}) -m len gt 0 }` : '  acl session_only always_false',
    `  http-request return status 401 content-type "application/json; charset=utf-8" string '{"error":{"code":"UNAUTHENTICATED","message":"this endpoint needs a valid bearer token: Authorization: Bearer <token>"}}' hdr www-authenticate "Bearer error=\\"invalid_token\\"" if protected !public_path !{ var(txn.jwt_issuer) -m found } !session_only`,
    `  http-request set-var(txn.rl_rule) var(txn.mp),map_beg(${join(runDir, 'ratelimits.map')})`,
    '  http-request set-var(txn.rl_key) src',
    '  http-request set-var(txn.rl_key) str(user:),concat(,txn.jwt_sub,) if { var(txn.jwt_issuer) -m found }',
    ...rate,
    '  # The route: legacy, unscoped service and unscoped canary routes here; fenced and method-scoped ones (and fnv1a canaries) in Lua (route-choice.ts).',
    '  acl retry_safe method GET HEAD OPTIONS',
    '  acl retry_safe req.hdr(idempotency-key) -m len gt 0',
    '  http-request set-var(txn.fig_t0) date(0,ms)',
    '  http-request set-var(txn.prefix) var(txn.fast),field(2,|) if { var(txn.fast) -m found }',
    '  http-request set-var(txn.fast) var(txn.fast),field(1,|) if { var(txn.fast) -m found }',
    '  http-request lua.strangler_route if { var(txn.fast) -m str lua }',
    '  http-request set-var(txn.fig_svc) var(txn.fast),field(2,:) if { var(txn.fast) -m beg service: legacy: }',
    '  http-request set-var(txn.fig_side) var(txn.fast),field(1,:) if { var(txn.fast) -m beg service: legacy: }',
    '  http-request set-var(txn.backend) str(svc_),concat(,txn.fig_svc,) if { var(txn.fast) -m beg service: } retry_safe',
    '  http-request set-var(txn.backend) str(svc_),concat(,txn.fig_svc,_strict) if { var(txn.fast) -m beg service: } !retry_safe',
    '  # An unscoped canary (canary:<service>:<weight×100>), natively: the user is the verified subject, else a strangler_canary cookie',
    '  # of the shape canary.ts sets, else a new one sent back; on the service side when xxh32("<service>:<user>") % 10000 is under',
    "  # weight×100, the bucket canary.ts gives the user. The service's backend keeps legacy as backup (the Node engine's no-instance).",
    '  acl canary var(txn.fast) -m beg canary:',
    '  http-request set-var(txn.fig_svc) var(txn.fast),field(2,:) if canary',
    '  http-request set-var(txn.canary_cut) var(txn.fast),field(3,:) if canary',
    '  http-request set-var(txn.canary_user) var(txn.jwt_sub) if canary { var(txn.jwt_issuer) -m found }',
    `  http-request set-var(txn.canary_user) req.cook(${CANARY_COOKIE}) if canary !{ var(txn.canary_user) -m found } { req.cook(${CANARY_COOKIE}) -m reg ${CANARY_COOKIE_VALUE.source} }`,
    `  http-request set-var-fmt(txn.set_cookie) "${CANARY_COOKIE}=%[uuid(4),regsub(-,,g)]; ${CANARY_COOKIE_ATTRIBUTES}" if canary !{ var(txn.canary_user) -m found }`,
    '  http-request set-var(txn.canary_user) var(txn.set_cookie),field(1,;),field(2,=) if canary !{ var(txn.canary_user) -m found }',
    '  http-request set-var(txn.fig_side) str(legacy) if canary',
    '  http-request set-var(txn.fig_side) str(service) if canary { var(txn.fig_svc),concat(:,txn.canary_user,),xxh32,mod(10000),sub(txn.canary_cut) -m int lt 0 }',
    '  http-request set-var(txn.backend) str(svc_),concat(,txn.fig_svc,) if canary { var(txn.fig_side) -m str service }',
    '  # Writes in flight per route prefix (conn_cur: streams tracking it): a fenced table is acknowledged once they are done.',
    `  http-request track-sc1 var(txn.prefix) table ${INFLIGHT_TABLE} if !{ method GET HEAD OPTIONS } { var(txn.prefix) -m len gt 0 }`,
    '  # Expect: 100-continue is answered here once every check that may refuse the request has passed (as on the Node engine); the upstream never sees it.',
    '  http-request wait-for-body time 1s at-least 1 if { req.hdr(expect) -i -m str 100-continue }',
    '  # SECURITY: identity and forwarding headers come from the gateway only (headers.ts).',
    `  http-request del-header ^(?i:${[...IDENTITY_HEADERS, 'forwarded', 'x-real-ip', ...hop].join('|')})$ -m reg`,
    '  http-request set-header x-user-id %[var(txn.jwt_sub)] if { var(txn.jwt_sub) -m found }',
    '  http-request set-header x-user-email %[var(txn.jwt_email)] if { var(txn.jwt_email) -m found }',
    '  http-request set-header x-user-issuer %[var(txn.jwt_issuer)] if { var(txn.jwt_issuer) -m found }',
    '  http-request set-header x-forwarded-for "%[req.fhdr(x-forwarded-for)], %[src]" if trusted_proxy { req.hdr(x-forwarded-for) -m found }',
    '  http-request set-header x-forwarded-for %[src] unless trusted_proxy { req.hdr(x-forwarded-for) -m found }',
    '  http-request set-header x-forwarded-proto http unless trusted_proxy { req.hdr(x-forwarded-proto) -m found }',
    '  http-request set-header x-forwarded-host %[req.hdr(host)] unless trusted_proxy { req.hdr(x-forwarded-host) -m found }',
    '  http-request del-header x-forwarded-host if { req.hdr(x-forwarded-host) -m len 0 }',
    '  http-request set-header x-request-id %[var(txn.request_id)]',
    '  http-request set-header traceparent 00-%[uuid(4),regsub(-,,g)]-%[rand,hex,lower]-01 unless { req.hdr_cnt(traceparent) eq 1 } { req.hdr(traceparent) -m reg ^[0-9a-e][0-9a-f]-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$ }',
    '  # A 101 Switching Protocols (a WebSocket) keeps its Upgrade and Connection.',
    '  http-response lua.strangler_response if !{ status 101 } { res.hdr_cnt(connection) gt 0 } !{ res.fhdr(connection) -i -m reg ^(keep-alive|close)$ }',
    ...figureRules,
    '  http-response del-header ^(?i:x-request-id|proxy-authenticate|keep-alive)$ -m reg',
    '  http-response del-header upgrade unless { status 101 }',
    '  http-after-response set-header x-request-id %[var(txn.request_id)]',
    '  http-after-response add-header set-cookie %[var(txn.set_cookie)] if { var(txn.set_cookie) -m found }',
    '  use_backend %[var(txn.backend)] if { var(txn.backend) -m found }',
    `  default_backend ${LEGACY_BACKEND}`,
    '',
    ...backends,
  ].join('\n');
  files['haproxy.cfg'] = `${cfg}\n`;
  return { files, cfgFile, socket, routesMap, fastMap, agentMap, jwksKeys, liveKeysMap };
}
