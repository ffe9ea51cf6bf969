import { createPublicKey, randomBytes, type JsonWebKey } from 'node:crypto';
import { createServer } from 'node:net';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import type { ResolvedConfig } from '../../core/config/load.ts';
import { createLogger, type Logger } from '../../core/logger.ts';
import { issuersOf } from '../issuers.ts';
import type { IssuerSpec } from '../token-verifier.ts';
import { LATENCY_BOUNDS_MS, RouteFigures } from '../metrics.ts';
import type { LiveRouteState } from '../route-state.ts';
import { gatewaySecrets } from '../server.ts';
import type { EndpointView } from '../upstreams.ts';
import { runHaproxy, writeRendered, type HaproxyProcess } from './process.ts';
import { FIGURES_TABLE, INFLIGHT_TABLE, renderHaproxy, serviceBackend, type JwksKey, type RenderedHaproxy } from './render-config.ts';
import { fastMapEntries, routeMapEntries } from './route-maps.ts';
import { createRegistrySlots } from './registry-slots.ts';
import { replaceMap, runtimeCommand } from './runtime-api.ts';
import { createRedisRegistry } from '../../core/registry/redis-registry.ts';
import { createRouteFollower } from '../route-follower.ts';

export interface StartHaproxyOptions {
  /** 0 takes a free port; default: gateway.port. */
  port?: number;
  instanceId?: string;
  logger?: Logger;
  /** Default: gateway.haproxy.runDir. */
  runDir?: string;
}

export interface RunningHaproxyEngine {
  url: string;
  port: number;
  instanceId: string;
  haproxy: HaproxyProcess;
  routes: LiveRouteState;
  rendered: RenderedHaproxy;
  stop(): Promise<void>;
}

/** A free TCP port on the host (HAProxy binds it itself). */
export function freePort(host: string): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, host, () => {
      const { port } = s.address() as { port: number };
      s.close(() => ok(port));
    });
  });
}

/**
 * The public keys of the JWKS issuers (jwt_verify cannot fetch them itself), each issuer's set or,
 * when it cannot be fetched, no entry for it (logged with `unreachable`). At start, an issuer that
 * cannot be reached gets no key: its tokens are refused until the engine restarts.
 */
export async function fetchJwksKeys(issuers: IssuerSpec[], timeoutMs: number, logger: Logger, unreachable = 'cannot fetch the issuer\'s JWKS; its tokens are refused until strangler haproxy restarts with it reachable'): Promise<Record<string, JwksKey[]>> {
  const out: Record<string, JwksKey[]> = {};
  for (const i of issuers) {
    if (i.kind !== 'jwks') continue;
    try {
      const res = await fetch(i.jwksUrl, { signal: AbortSignal.timeout(timeoutMs) });
      if (!res.ok) throw new Error(`answered ${res.status}`);
      const { keys } = (await res.json()) as { keys?: Array<JsonWebKey & { kid?: string; use?: string }> };
      out[i.name] = (keys ?? []).filter((k) => k.use !== 'enc' && (k.kty === 'RSA' || k.kty === 'EC')).map((k) => ({ kid: k.kid ?? null, pem: createPublicKey({ key: k, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString() }));
    } catch (err) {
      logger.warn({ err, issuer: i.name, url: i.jwksUrl }, unreachable);
    }
  }
  return out;
}

/** Renders the configuration from strangler.yaml (secrets checked first, as the Node gateway does). */
export function renderFor(config: ResolvedConfig, layout: { runDir: string; port: number }, jwks: Record<string, JwksKey[]> = {}): RenderedHaproxy {
  const secrets = gatewaySecrets(config);
  return renderHaproxy(config, { adminToken: secrets.adminToken, issuers: issuersOf(config, secrets.jwtSecret), jwks }, { runDir: resolve(layout.runDir), port: layout.port, host: config.gateway.host });
}

/** One key of the figures table (`show table figures`): `<service>:<side>:<latency bucket>` and its cumulative counters. */
export interface FigureCounters {
  service: string;
  target: 'legacy' | 'service';
  /** The LATENCY_BOUNDS_MS bucket (its length: past the last bound). */
  bucket: number;
  /** gpc0: requests answered within the bucket. */
  requests: number;
  /** gpc1: of them, 5xx. */
  errors: number;
}

/** Parses `show table figures` (render-config.ts figureRules). */
export function parseFigureTable(text: string): FigureCounters[] {
  const out: FigureCounters[] = [];
  for (const line of text.split('\n')) {
    const key = / key=([a-z][a-z0-9-]*):(legacy|service):(\d+) /.exec(line);
    if (!key || Number(key[3]) > LATENCY_BOUNDS_MS.length) continue;
    const gpc: number[] = [];
    for (const m of line.matchAll(/ gpc(\d+)=(\d+)/g)) gpc[Number(m[1])] = Number(m[2]);
    out.push({ service: key[1], target: key[2] as 'legacy' | 'service', bucket: Number(key[3]), requests: gpc[0] ?? 0, errors: gpc[1] ?? 0 });
  }
  return out;
}

/**
 * Pure: what was counted since the last read, per service and side (HAProxy's counters are
 * cumulative and 32-bit: a counter that wrapped still gives its delta).
 */
export function figureDeltas(now: FigureCounters[], last: Map<string, [number, number]>): Array<{ service: string; target: 'legacy' | 'service'; requests: number; errors: number; latency: number[] }> {
  const sums = new Map<string, { service: string; target: 'legacy' | 'service'; requests: number; errors: number; latency: number[] }>();
  for (const f of now) {
    const key = `${f.service}:${f.target}:${f.bucket}`;
    const [requests, errors] = last.get(key) ?? [0, 0];
    last.set(key, [f.requests, f.errors]);
    const side = `${f.service}:${f.target}`;
    let sum = sums.get(side);
    if (!sum) sums.set(side, (sum = { service: f.service, target: f.target, requests: 0, errors: 0, latency: new Array<number>(LATENCY_BOUNDS_MS.length + 1).fill(0) }));
    const d = (f.requests - requests) >>> 0;
    sum.requests += d;
    sum.errors += (f.errors - errors) >>> 0;
    sum.latency[f.bucket] += d;
  }
  return [...sums.values()];
}

/** Writes in flight for one prefix, from `show table inflight key <prefix>` (0 when it has no entry). */
export function writesInFlight(text: string): number {
  return Number(/ conn_cur=(\d+)/.exec(text)?.[1] ?? 0);
}

/**
 * Pure: the ids the live-keys map should hold after a JWKS refresh. A loaded key stays live while
 * its issuer's fetched set holds a key with its kid and material, and is live again once it does;
 * an issuer whose set could not be fetched keeps its keys as they are. `revoked` and `restored`
 * are what changed; `unloaded`: published keys HAProxy has no file for (they need a restart).
 */
export function jwksChanges(loaded: RenderedHaproxy['jwksKeys'], published: Record<string, JwksKey[]>, live: ReadonlySet<string>): { live: Set<string>; revoked: RenderedHaproxy['jwksKeys']; restored: RenderedHaproxy['jwksKeys']; unloaded: Array<{ issuer: string; kid: string | null }> } {
  const same = (a: { kid: string | null; pem: string }, b: { kid: string | null; pem: string }) => a.kid === b.kid && a.pem === b.pem;
  const next = new Set<string>();
  for (const k of loaded) {
    const set = published[k.issuer];
    if (set ? set.some((p) => same(p, k)) : live.has(k.id)) next.add(k.id);
  }
  const unloaded = Object.entries(published).flatMap(([issuer, set]) => set.filter((p) => !loaded.some((k) => k.issuer === issuer && same(p, k))).map((p) => ({ issuer, kid: p.kid })));
  return { live: next, revoked: loaded.filter((k) => live.has(k.id) && !next.has(k.id)), restored: loaded.filter((k) => !live.has(k.id) && next.has(k.id)), unloaded };
}

/** `show stat` CSV as rows keyed by its header's names. */
function parseStat(csv: string): Array<Record<string, string>> {
  const [head, ...lines] = csv.split('\n').filter(Boolean);
  const names = head.replace(/^# /, '').split(',');
  return lines.map((l) => Object.fromEntries(l.split(',').map((v, i) => [names[i], v])));
}

/**
 * The HAProxy engine (`strangler haproxy`): renders haproxy.cfg from strangler.yaml, runs HAProxy,
 * and follows the control plane like a Node gateway (LiveRouteState: pub/sub, polling, snapshot).
 * Each route version is applied as one atomic routes-map swap through the Runtime API, and only
 * then acknowledged under this instance id, so `strangler cutover` waits for HAProxy itself.
 * The per-route figures HAProxy counts (its figures stick table) are read every figuresIntervalMs
 * into Redis (canary analysis), and the instances' health from `show stat` published for
 * `strangler services`.
 */
export async function startHaproxyEngine(config: ResolvedConfig, options: StartHaproxyOptions = {}): Promise<RunningHaproxyEngine> {
  const g = config.gateway;
  const logger = options.logger ?? createLogger('haproxy', config.logLevel);
  const instanceId = options.instanceId ?? `haproxy-${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const port = options.port === 0 ? await freePort(g.host) : (options.port ?? g.port);
  const secrets = gatewaySecrets(config);
  const jwksIssuers = issuersOf(config, secrets.jwtSecret).filter((i) => i.kind === 'jwks');
  const jwks = await fetchJwksKeys(jwksIssuers, g.jwksTimeoutMs, logger);
  const rendered = renderFor(config, { runDir: options.runDir ?? g.haproxy.runDir, port }, jwks);
  writeRendered(resolve(options.runDir ?? g.haproxy.runDir), rendered);
  const haproxy = await runHaproxy(g.haproxy.binary, rendered, (line) => logger.info({ haproxy: line }, 'haproxy'));

  let alive = true;
  // The ids in HAProxy's live-keys map: every loaded key at start.
  let liveKeys = new Set(rendered.jwksKeys.map((k) => k.id));
  const unloadedKeys = new Set<string>();
  // One refresh at a time (a slow JWKS must not have two swap the map).
  let refreshing = false;
  const refreshJwks = async () => {
    if (refreshing) return;
    refreshing = true;
    try {
      const published = await fetchJwksKeys(jwksIssuers, g.jwksTimeoutMs, logger, 'cannot fetch the issuer\'s JWKS; the keys fetched before stay in use');
      const changes = jwksChanges(rendered.jwksKeys, published, liveKeys);
      if (changes.revoked.length || changes.restored.length) {
        await replaceMap(rendered.socket, rendered.liveKeysMap, [...changes.live].map((id) => [id, '1']));
        liveKeys = changes.live;
        for (const k of changes.revoked) logger.warn({ issuer: k.issuer, kid: k.kid }, 'the issuer no longer publishes this key: its tokens are refused from now on');
        for (const k of changes.restored) logger.info({ issuer: k.issuer, kid: k.kid }, 'the issuer publishes this key again: its tokens are accepted');
      }
      for (const k of changes.unloaded) {
        if (unloadedKeys.has(`${k.issuer}/${k.kid}`)) continue;
        unloadedKeys.add(`${k.issuer}/${k.kid}`);
        logger.error({ issuer: k.issuer, kid: k.kid }, 'the issuer publishes a key HAProxy has not loaded (it reads keys at start): tokens signed with it are refused until strangler haproxy restarts; restart the instances one at a time');
      }
    } catch (err) {
      if (alive) logger.error({ err }, 'cannot update HAProxy\'s live JWKS keys; retried at the next refresh');
    } finally {
      refreshing = false;
    }
  };
  const serviceNames = new Set(config.services.map((s) => s.name));
  const follower = createRouteFollower(config, {
    instanceId,
    logger,
    engine: 'haproxy',
    // The acknowledgement means HAProxy serves the table: it is sent only once the map swap is committed.
    beforeAckRequired: true,
    beforeAck: async (table) => {
      if (!alive) throw new Error('HAProxy is not running');
      // The Lua's map first: a request that finds "lua" in the new fast map reads the new routes too.
      await replaceMap(rendered.socket, rendered.routesMap, routeMapEntries(table));
      await replaceMap(rendered.socket, rendered.fastMap, fastMapEntries(table, serviceNames));
      // As the Node gateway: a fenced table is acknowledged once no write sent by the old routing is left in flight.
      const deadline = Date.now() + g.upstreamTimeoutMs;
      for (const r of table.routes.filter((x) => x.fenced)) {
        while (Date.now() < deadline && writesInFlight(await runtimeCommand(rendered.socket, `show table ${INFLIGHT_TABLE} key ${r.prefix}`)) > 0) await new Promise((ok) => setTimeout(ok, 5));
      }
      logger.info({ version: table.version, routes: table.routes.length }, 'route table applied to HAProxy');
    },
  });
  const { keys, redis, redisHealth, routes } = follower;
  await follower.start();
  const registryServices = config.services.filter((s) => s.discovery === 'registry').map((s) => s.name);
  const registry = registryServices.length ? createRedisRegistry({ redis, keyPrefix: config.redis.keyPrefix, logger }) : null;
  const slots = registry ? createRegistrySlots({ socket: rendered.socket, registry, services: registryServices, allowedHosts: config.registry.allowedHosts, logger }) : null;
  await slots?.refresh();
  const slotsTimer = setInterval(() => void (alive && slots?.refresh()), g.loadBalancer.refreshMs);
  slotsTimer.unref();

  const figures = new RouteFigures(redis, keys, redisHealth);
  figures.start();
  const lastCounters = new Map<string, [number, number]>();
  const readFigures = async () => {
    try {
      const table = parseFigureTable(await runtimeCommand(rendered.socket, `show table ${FIGURES_TABLE}`));
      for (const f of figureDeltas(table, lastCounters)) if (f.requests > 0) figures.add(f.service, f.target, f.requests, f.errors, f.latency);
    } catch (err) {
      if (alive) logger.warn({ err }, 'cannot read the per-route figures from HAProxy');
    }
  };
  const figuresTimer = setInterval(() => void readFigures(), g.haproxy.figuresIntervalMs);
  figuresTimer.unref();

  // Each service's instances as HAProxy sees them (health checks, outlier mark-down), for `strangler services`.
  const lastTotals = new Map<string, { requests: number; failures: number }>();
  const publishView = async () => {
    if (!alive) return;
    // Alive: /healthz answers 200 while this is recent (render-config.ts AGENT_STALE_S).
    await runtimeCommand(rendered.socket, `set map ${rendered.agentMap} agent ${Math.floor(Date.now() / 1000)}`).catch(() => undefined);
    if (!redisHealth.ok) return;
    try {
      const stats = parseStat(await runtimeCommand(rendered.socket, 'show stat'));
      const clusters: Record<string, EndpointView[]> = {};
      for (const s of config.services) {
        clusters[s.name] = stats
          .filter((r) => r.pxname === serviceBackend(s.name) && /^[ir]\d+$/.test(r.svname) && r.status !== 'MAINT')
          .map((r) => {
            const url = `http://${r.addr}`;
            const requests = Number(r.stot || 0);
            const failures = Number(r.eresp || 0) + Number(r.econ || 0) + Number(r.hrsp_5xx || 0);
            const last = lastTotals.get(`${s.name}/${r.svname}`) ?? { requests, failures };
            lastTotals.set(`${s.name}/${r.svname}`, { requests, failures });
            const up = r.status.startsWith('UP');
            const health: EndpointView['health'] = r.check_status === '' ? 'unknown' : up ? 'healthy' : 'unhealthy';
            return { id: r.addr, url, source: s.discovery, health, available: up || r.status === 'no check', ejected: false, ejectedForMs: 0, ejections: 0, inFlight: Number(r.scur || 0), requests, failures, recentRequests: requests - last.requests, recentFailures: failures - last.failures };
          });
      }
      const ttl = Math.max(3 * g.heartbeatIntervalMs, 5_000);
      await redis.set(keys.gatewayUpstreams(instanceId), JSON.stringify({ gateway: instanceId, at: Date.now(), clusters }), 'PX', ttl);
    } catch (err) {
      if (alive) logger.warn({ err }, 'cannot publish the instances view');
    }
  };
  void publishView();
  const viewTimer = setInterval(() => void publishView(), g.heartbeatIntervalMs);
  viewTimer.unref();

  // The JWKS keys HAProxy loaded at start, checked against what their issuers publish every
  // jwksRefreshMs (the Node engine's cache age): one no longer published is revoked at once.
  const jwksTimer = jwksIssuers.length ? setInterval(() => void refreshJwks(), g.jwksRefreshMs) : null;
  jwksTimer?.unref();

  let stopping: Promise<void> | null = null;
  const stop = () => {
    stopping ??= (async () => {
      if (jwksTimer) clearInterval(jwksTimer);
      clearInterval(figuresTimer);
      clearInterval(viewTimer);
      clearInterval(slotsTimer);
      await readFigures();
      alive = false;
      await follower.withdraw();
      await figures.stop();
      await haproxy.stop();
      await follower.close();
    })();
    return stopping;
  };
  // HAProxy gone: this instance withdraws (a cutover must not wait for, nor count on, a dead data plane).
  void haproxy.exited.then((code) => {
    if (stopping) return;
    alive = false;
    logger.error({ code }, 'HAProxy exited; the agent withdraws this instance');
    void stop();
  });
  logger.info({ port, instanceId, pid: haproxy.pid }, 'haproxy engine listening');
  return { url: `http://${g.host}:${port}`, port, instanceId, haproxy, routes, rendered, stop };
}
