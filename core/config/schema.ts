import { z } from 'zod';
import { BEARER_TOKEN, BEARER_TOKEN_PROBLEM, GENERATE_HINT, secretStrength } from './secret-strength.ts';

/**
 * The schema of strangler.yaml. Every object is strict: an unknown key is an error that names
 * the key (and the closest known one), never silently ignored.
 */

const name = z
  .string()
  .regex(/^[a-z][a-z0-9-]*$/, 'expected a lowercase name of letters, digits and dashes, such as "invoices"');
const port = z.number().int().min(1).max(65535);
const httpUrl = z.url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' });
/** A database: a bare name (created on `postgres.url`'s cluster) or a full postgres:// URL. */
const database = z
  .string()
  .min(1)
  .regex(/^([a-z_][a-z0-9_]*|postgres(ql)?:\/\/.+)$/, 'expected a database name (a-z, 0-9, _) or a postgres:// URL');
const sqlIdent = z.string().regex(/^[a-z_][a-z0-9_]*$/, 'expected a lowercase SQL identifier such as "invoice_items"');
/**
 * A secret: no default (one printed here would be known to everyone), at least 256 bits of
 * entropy as far as can be told (core/config/secret-strength.ts).
 */
const secret = z.string().superRefine((value, ctx) => {
  const { problem } = secretStrength(value);
  if (problem) ctx.addIssue({ code: 'custom', message: `the secret is ${problem}; generate one with: ${GENERATE_HINT}` });
});
const bearerSecret = secret.regex(BEARER_TOKEN, BEARER_TOKEN_PROBLEM);
const prefix = z
  .string()
  .regex(/^(\/[a-z0-9][a-z0-9._-]*)+$/, 'expected a lowercase path prefix such as "/api/invoices" (no trailing slash)');

export const tableMappingSchema = z.strictObject({
  /** The legacy table. */
  source: sqlIdent,
  /** The table in the service database; defaults to the same name. */
  target: sqlIdent.optional(),
  /** Source column → target column, for renamed columns. Unlisted columns keep their name. */
  columns: z.record(sqlIdent, sqlIdent).default({}),
  /** Source columns that are not carried to the service. */
  exclude: z.array(sqlIdent).default([]),
  /** A read-only copy of a table another service owns: synced forward, never written, never reverse-synced. */
  replica: z.boolean().default(false),
  /** This table's policy for a column added on its source (default: sync.schemaChanges.newColumn). */
  newColumn: z.enum(['ignore', 'add', 'stop']).optional(),
  /** This table's policy for a TRUNCATE on its source (default: sync.schemaChanges.truncate). */
  truncate: z.enum(['apply', 'stop']).optional(),
});

/** The statuses of a healthy answer: one (200), a range ("200-399") or a class ("2xx"). */
const expectStatus = z.union([
  z.number().int().min(100).max(599),
  z.string().regex(/^([1-5]xx|[1-5]\d\d(-[1-5]\d\d)?)$/, 'expected a status (200), a range ("200-399") or a class ("2xx")')
    .refine((v) => !v.includes('-') || Number(v.slice(0, 3)) <= Number(v.slice(4)), 'expected a range from the lower status to the higher, such as "200-399"'),
]);

/**
 * Active health checks: the gateway asks every instance, healthy or not, on this interval, and
 * the cutover preflight asks the same way (core/health-check.ts).
 */
const healthCheckFields = {
  /** false: instances are never asked and count as healthy (passive outlier detection still takes failing ones out). */
  enabled: z.boolean().default(true),
  /** Answered with an `expect` status by a healthy instance (the service kit's /health checks its database); a monolith without one: "/" or any cheap page. */
  path: z.string().regex(/^\//, 'expected a path starting with /').default('/health'),
  expect: expectStatus.default('2xx'),
  intervalMs: z.number().int().min(100).default(2_000),
  timeoutMs: z.number().int().min(10).default(1_000),
  /** Consecutive passes that bring an unhealthy instance back (a new instance needs one). */
  healthyThreshold: z.number().int().min(1).default(2),
  /** Consecutive failures that take an instance out of rotation. */
  unhealthyThreshold: z.number().int().min(1).default(2),
};
export const healthCheckSchema = z.strictObject(healthCheckFields);
/** The same fields without defaults: legacy or a service overrides only what it names. */
const healthCheckOverride = z.strictObject(Object.fromEntries(Object.entries(healthCheckFields).map(([k, v]) => [k, v.unwrap().optional()])) as {
  [K in keyof typeof healthCheckFields]: z.ZodOptional<ReturnType<(typeof healthCheckFields)[K]['unwrap']>>;
});

export const serviceSchema = z.strictObject({
  name,
  /** The route prefix the service takes over, such as /api/invoices. */
  prefix,
  port,
  /** Where the gateway reaches the service; defaults to http://127.0.0.1:<port>. */
  url: httpUrl.optional(),
  /**
   * Where the gateway finds the service's instances: `static` (url and `instances`) or
   * `registry` (the instances that registered themselves in Redis and are alive).
   */
  discovery: z.enum(['static', 'registry']).default('static'),
  /** More static instances besides `url` (discovery: static). */
  instances: z.array(httpUrl).default([]),
  /** Overrides of gateway.healthCheck for this service. */
  healthCheck: healthCheckOverride.optional(),
  database,
  /** Position in the migration order (1 first). */
  order: z.number().int().min(1),
  /** Services that must be switched before this one may be. */
  dependsOn: z.array(name).default([]),
  /** Legacy tables the service owns. */
  tables: z.array(tableMappingSchema).default([]),
  /** A read-only service (analytics) refuses writes and never needs reverse sync. */
  readOnly: z.boolean().default(false),
  /** Shadow diff: JSON paths ignored when comparing legacy and service answers. */
  ignorePaths: z.array(z.string()).default([]),
});

/**
 * A process `strangler dev up` runs, as a Procfile line: the monolith or a service, in any
 * language. It gets the stack's values in its environment (STRANGLER_POSTGRES_URL, REDIS_URL,
 * STRANGLER_LEGACY_DATABASE_URL, the secrets …; docs/runbook.md#the-local-stack).
 */
export const devProcessSchema = z.strictObject({
  name,
  /** A shell command line; `$VAR` takes the stack's values, as in a Procfile. */
  command: z.string().min(1),
  /** More environment; `${VAR}` in a value takes one of the stack's values. */
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an environment variable name such as DATABASE_URL'), z.string()).default({}),
  /** Directory it runs in, relative to strangler.yaml's (default: dev.cwd). */
  cwd: z.string().min(1).optional(),
  /** The port it listens on (also given as $PORT): dev up refuses to start when something else holds it, and waits for it before the next process. */
  port: port.optional(),
  /** A path answering 2xx once it is ready (needs port). */
  health: z.string().regex(/^\//, 'expected a path starting with /').optional(),
  /** Longest wait for it to listen (and answer health). */
  readyTimeoutMs: z.number().int().min(100).default(60_000),
});

/** A credential limit: at most `limit` counted attempts per key in each window of windowMs. */
const credentialRule = z.strictObject({ limit: z.number().int().min(1), windowMs: z.number().int().min(1_000) });

export const configSchema = z.strictObject({
  /** The PostgreSQL cluster that database names (not URLs) resolve against. */
  postgres: z.strictObject({ url: z.string().regex(/^postgres(ql)?:\/\//, 'expected a postgres:// URL') }).default({
    url: 'postgres://postgres@127.0.0.1:5432',
  }),
  redis: z
    .strictObject({
      url: z.string().regex(/^rediss?:\/\//, 'expected a redis:// URL').default('redis://127.0.0.1:6379'),
      keyPrefix: z.string().default('strangler:'),
      /**
       * Deadline of every Redis command the gateway sends (DESIGN.md: a dependency that hangs is
       * treated like one that is down); a Redis that does not answer within it is unavailable
       * until it answers a probe again. The services' background calls (registry heartbeats,
       * event relay, OCR enqueue) get 8× it, at least 2 s.
       */
      commandTimeoutMs: z.number().int().min(10).max(60_000).default(250),
      /** How often a gateway asks Redis whether it answers (PING): how soon it says degraded, and comes back. */
      probeIntervalMs: z.number().int().min(50).max(60_000).default(500),
    })
    .prefault({}),
  legacy: z
    .strictObject({
      port: port.default(5001),
      url: httpUrl.optional(),
      database: database.default('legacy'),
      /** Overrides of gateway.healthCheck for the monolith (a monolith without /health: `{ path: /, expect: 200 }`, or `{ enabled: false }`). */
      healthCheck: healthCheckOverride.optional(),
      /**
       * The HS256 secret the monolith signs its tokens with. No default: the gateway, the services
       * and the monolith refuse to start without it. Set it outside version control:
       * STRANGLER_LEGACY_JWT_SECRET or --legacy-jwt-secret-file.
       */
      jwtSecret: secret.optional(),
      /** The `iss` the monolith's tokens carry; null (or empty) when they carry none (Flask-JWT-Extended, simplejwt and Devise-JWT by default). */
      jwtIssuer: z.string().nullable().default('legacy'),
      /** The HMAC algorithms its tokens may use. */
      jwtAlgorithms: z.array(z.enum(['HS256', 'HS384', 'HS512'])).min(1).default(['HS256']),
      /** The claim holding the user id (string or number): `sub` (Flask-JWT-Extended's JWT_IDENTITY_CLAIM), `user_id` (simplejwt's USER_ID_CLAIM)… */
      jwtUserIdClaim: z.string().min(1).default('sub'),
      /** Expected `aud`, when its tokens carry one. */
      jwtAudience: z.string().min(1).optional(),
      tokenTtlSeconds: z.number().int().min(60).default(3600),
      /** Largest accepted OCR upload. */
      maxUploadBytes: z.number().int().min(1024).default(5 * 1024 * 1024),
    })
    .prefault({}),
  control: z
    .strictObject({
      database: database.default('strangler_control'),
      schema: sqlIdent.default('strangler'),
      /** Deadline of a gateway's queries to the control database (route table and version polls). */
      queryTimeoutMs: z.number().int().min(100).max(60_000).default(5_000),
      /**
       * Lease of a write hold (fence) a switch or a rollback sets: past it, gateways lift the hold
       * and follow the last committed route, so a killed command cannot hold writes forever. Longer
       * than gateway.fenceHoldMs plus the acknowledgement wait; a switch whose lease ran out is refused.
       */
      fenceLeaseMs: z.number().int().min(1_000).max(600_000).default(30_000),
    })
    .prefault({}),
  gateway: z
    .strictObject({
      /**
       * The data plane: `node` (this toolkit's gateway, `strangler gateway`) or `haproxy` (HAProxy
       * driven by an agent, `strangler haproxy`; docs/data-planes.md says what each supports).
       */
      engine: z.enum(['node', 'haproxy']).default('node'),
      /** The HAProxy engine's settings (engine: haproxy). */
      haproxy: z
        .strictObject({
          /** The haproxy executable (Debian: apt-get install haproxy, 2.6 or later). */
          binary: z.string().min(1).default('/usr/sbin/haproxy'),
          /** Where the rendered haproxy.cfg, its maps, its Lua and its Runtime API socket live. */
          runDir: z.string().min(1).default('.strangler/haproxy'),
          /** HAProxy threads (nbthread). */
          threads: z.number().int().min(1).max(64).default(2),
          /** How often the agent reads HAProxy's per-route figures into Redis (canary analysis). */
          figuresIntervalMs: z.number().int().min(100).max(60_000).default(1_000),
        })
        .prefault({}),
      port: port.default(5000),
      host: z.string().default('127.0.0.1'),
      /**
       * The bearer token of the gateway's admin endpoints (/metrics). No default: the gateway
       * refuses to start without it. Set it outside version control: STRANGLER_ADMIN_TOKEN or
       * --admin-token-file.
       */
      adminToken: bearerSecret.optional(),
      /** Proxies trusted to set X-Forwarded-For (CIDRs or addresses). Empty: trust none. */
      trustedProxies: z.array(z.string()).default([]),
      /** Paths under protectedPrefixes reachable without a token: your monolith's login and registration. */
      publicPaths: z.array(z.string()).default([]),
      /** Largest request body; larger ones get 413 (at once when Content-Length says so, before any is read). */
      bodyLimitBytes: z.number().int().min(1024).default(10 * 1024 * 1024),
      /** Largest request head (request line and headers) a client may send; larger ones get 431. */
      maxHeaderBytes: z.number().int().min(1024).max(1024 * 1024).default(16 * 1024),
      /**
       * SECURITY: time a client has to send its whole request head (slowloris); past it, 408 and
       * the connection is closed.
       */
      headersTimeoutMs: z.number().int().min(100).max(600_000).default(20_000),
      /** Time a client has to send its whole request, body included (slow uploads); 0: none. Past it, 408. */
      requestTimeoutMs: z.number().int().min(0).max(3_600_000).default(300_000),
      /** How long an idle client connection is kept open for its next request. */
      keepAliveTimeoutMs: z.number().int().min(0).max(600_000).default(65_000),
      upstreamTimeoutMs: z.number().int().min(10).default(30_000),
      snapshotFile: z.string().default('.strangler/gateway-routes.json'),
      pollIntervalMs: z.number().int().min(100).default(2_000),
      heartbeatIntervalMs: z.number().int().min(100).default(1_000),
      /** Path prefixes that need a valid bearer token (except publicPaths). */
      protectedPrefixes: z.array(z.string().regex(/^\//, 'expected a path starting with /')).default(['/api']),
      /** An issuer's JWKS (an auth service's RS256 tokens); gateway.auth.issuers takes more, of any kind. */
      jwks: z.strictObject({ url: httpUrl, issuer: z.string().min(1) }).optional(),
      /** Who may call the protected prefixes, and how the gateway knows. */
      auth: z
        .strictObject({
          /**
           * bearer: a valid token is needed (JWT at the edge). session-cookie: a monolith that keeps
           * its own sessions; a request carrying sessionCookie goes on with the cookie untouched
           * (the monolith checks it), one carrying a bearer token has it verified.
           */
          mode: z.enum(['bearer', 'session-cookie']).default('bearer'),
          sessionCookie: z.string().min(1).default('session'),
          /** Clock skew tolerated on exp and nbf. */
          clockToleranceSeconds: z.number().int().min(0).max(600).default(5),
          /** More issuers besides the monolith's (legacy.jwt*) and gateway.jwks: public keys (PEM or JWKS URL) or HMAC secrets in files. */
          issuers: z
            .array(
              z.strictObject({
                name: z.string().min(1),
                issuer: z.string().nullable().default(null),
                audience: z.string().min(1).optional(),
                userIdClaim: z.string().min(1).default('sub'),
                algorithms: z.array(z.enum(['HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'])).min(1),
                jwksUrl: httpUrl.optional(),
                publicKeyFile: z.string().min(1).optional(),
                /** SECURITY: a file holding the HMAC secret (never the secret itself in strangler.yaml). */
                secretFile: z.string().min(1).optional(),
              }),
            )
            .default([]),
        })
        .prefault({}),
      /** Expected `aud` claim, when tokens carry one. */
      audience: z.string().optional(),
      /** Deadline of a JWKS fetch (a token signed with a key not yet known); past it the request gets 503. */
      jwksTimeoutMs: z.number().int().min(50).max(30_000).default(1_000),
      /**
       * How old a JWKS issuer's fetched key set may get before it is fetched again: a key the
       * issuer stops publishing (revoked) is refused at the latest this long after.
       */
      jwksRefreshMs: z.number().int().min(1_000).max(86_400_000).default(600_000),
      /** Per-prefix rate limits (longest prefix wins), per user when authenticated, else per client IP. */
      rateLimits: z
        .array(
          z.strictObject({
            prefix: z.string().regex(/^\//, 'expected a path prefix starting with /'),
            limit: z.number().int().min(1),
            windowMs: z.number().int().min(100).default(60_000),
          }),
        )
        .default([{ prefix: '/', limit: 6000, windowMs: 60_000 }]),
      /**
       * How gateways share rate-limit counts (as Kong's sync_rate): hits far from a limit are
       * counted in memory and added to Redis every intervalMs; the last exactWithin hits below a
       * limit are counted in Redis before the request goes on. intervalMs 0: every hit synchronously.
       */
      rateLimitSync: z
        .strictObject({
          intervalMs: z.number().int().min(0).max(10_000).default(50),
          exactWithin: z.number().int().min(0).default(100),
        })
        .prefault({}),
      /**
       * Brute force and credential stuffing: attempts at the endpoints that take credentials
       * (writes to `paths`) are limited per client address and per account (the account named in
       * the body). By default only failed attempts count (answered 4xx): a successful one is
       * given back. Over a limit: 429 with Retry-After. Counted like rateLimits (shared by every
       * gateway, each counting alone while Redis is unavailable).
       */
      credentialLimits: z
        .strictObject({
          enabled: z.boolean().default(true),
          /** Exact paths whose POST, PUT and PATCH requests are credential attempts. Default: every gateway.publicPaths entry. */
          paths: z.array(z.string().regex(/^\//, 'expected a path starting with /')).optional(),
          /** Per client address (behind gateway.trustedProxies, the address they name); false: no limit. */
          perAddress: z.union([z.literal(false), credentialRule]).default({ limit: 20, windowMs: 60_000 }),
          /** Per account; false: no limit. A limit per account also lets anyone lock an account out for windowMs. */
          perAccount: z.union([z.literal(false), credentialRule]).default({ limit: 10, windowMs: 300_000 }),
          /** Body fields (JSON or form) naming the account, the first one present wins. */
          accountFields: z.array(z.string().min(1)).min(1).default(['email', 'username']),
          /** Bodies larger than this are forwarded without looking for the account (the address limit still holds). */
          maxBodyBytes: z.number().int().min(256).max(1024 * 1024).default(16 * 1024),
          /** Count successful attempts (2xx, 3xx) too, not only failed ones. */
          countSuccessful: z.boolean().default(false),
        })
        .prefault({}),
      shadow: z
        .strictObject({
          /** Shadow requests in flight at once; more are skipped (and counted), never queued. */
          concurrency: z.number().int().min(1).default(32),
          timeoutMs: z.number().int().min(10).default(2_000),
          /** Larger bodies are not compared (counted as skipped). */
          maxBodyBytes: z.number().int().min(1024).default(1024 * 1024),
          /** Mismatch samples kept per service for `strangler diff`. */
          samples: z.number().int().min(1).max(1000).default(50),
          /**
           * How long a differing answer may take to settle: the service is asked again (every
           * 100 ms) until it gives legacy's answer, then both once more; agreement is counted as
           * sync lag (`lagged`), not a mismatch. 0: a first difference is a mismatch.
           */
          recheckMs: z.number().int().min(0).max(60_000).default(2_000),
          /**
           * Noise cancellation (Diffy): each mirrored GET/HEAD is sent to legacy a second time,
           * with the service's request; a difference legacy's own two answers also show (a list
           * that grew, a counter, a generated field) is noise, not a mismatch. Costs one more
           * legacy read per mirrored request, within the same concurrency bound.
           */
          cancelNoise: z.boolean().default(true),
        })
        .prefault({}),
      /** Longest a write is held while its prefix is fenced for a switchover (then 503, Retry-After). */
      fenceHoldMs: z.number().int().min(100).default(5_000),
      /** Most writes held at once per gateway; more get 503 at once. */
      fenceMaxHeld: z.number().int().min(1).default(1_000),
      healthCheck: healthCheckSchema.prefault({}),
      /**
       * Passive outlier detection, as Envoy's consecutive_5xx: an instance that fails this many
       * requests in a row (5xx, refused, reset, timed out) is ejected for baseEjectionMs × the
       * times it has been ejected (at most maxEjectionMs), then readmitted.
       */
      outlierDetection: z
        .strictObject({
          consecutiveFailures: z.number().int().min(1).default(5),
          baseEjectionMs: z.number().int().min(100).default(10_000),
          maxEjectionMs: z.number().int().min(100).default(300_000),
          /** Most of a service's instances ejected at once (one may always be). */
          maxEjectionPercent: z.number().int().min(0).max(100).default(50),
        })
        .prefault({}),
      /** This gateway's zone (as instances register theirs, `strangler service --zone`): enables zone-aware routing. */
      zone: z.string().min(1).optional(),
      loadBalancer: z
        .strictObject({
          policy: z.enum(['least-outstanding', 'round-robin']).default('least-outstanding'),
          /** Further instances a request safe to retry may be sent to after a failure. */
          retries: z.number().int().min(0).max(5).default(2),
          /**
           * Envoy's retry budget: retries in flight on a service may be at most this share of
           * its requests in flight (or minConcurrency, if more), so that when every instance
           * fails, retries do not multiply the load on it. A retry over budget is not sent: the
           * request falls back to legacy when it may, else gets the failure.
           */
          retryBudget: z
            .strictObject({
              percent: z.number().min(0).max(100).default(20),
              minConcurrency: z.number().int().min(0).default(3),
            })
            .prefault({}),
          /**
           * Envoy's slow start: an instance that joins (or passes its checks again after failing
           * them) gets a share of requests growing linearly from minWeightPercent to a full one
           * over windowMs, so a cold process is not handed a full share at once. 0: off.
           */
          slowStart: z
            .strictObject({
              windowMs: z.number().int().min(0).default(0),
              minWeightPercent: z.number().min(1).max(100).default(10),
            })
            .prefault({}),
          /**
           * Zone-aware routing (with gateway.zone set): requests go to instances registered in the
           * gateway's own zone while at least this many of them are available, else to any zone.
           */
          localZoneMinAvailable: z.number().int().min(1).default(1),
          /** How often the instance list is re-read from the registry (changes also arrive by pub/sub). */
          refreshMs: z.number().int().min(100).default(1_000),
          /** Connections per instance. */
          connectionsPerInstance: z.number().int().min(1).default(128),
        })
        .prefault({}),
    })
    .prefault({}),
  sync: z
    .strictObject({
      maxLagBytes: z.number().int().min(0).default(16 * 1024 * 1024),
      maxLagSeconds: z.number().min(0).default(5),
      slotRetainWarnBytes: z.number().int().min(0).default(1024 * 1024 * 1024),
      /**
       * Where the ids of rows a service creates start: the monolith's stay below, so an id names
       * one row wherever it was created while both sides take writes. Key generators of service
       * databases (sequences, identity columns) are checked against it.
       */
      idRangeStart: z.number().int().min(2).max(Number.MAX_SAFE_INTEGER).default(1_000_000_001),
      /** Opening a connection to a source or target database. */
      connectTimeoutMs: z.number().int().min(100).default(10_000),
      /** One statement of a worker (a group's apply, bookkeeping, a heartbeat): past it the database is taken as hung, and the worker reconnects. */
      queryTimeoutMs: z.number().int().min(100).default(60_000),
      /** Silence on the replication stream (a ping is sent half-way) past which the source is taken as hung. */
      receiveTimeoutMs: z.number().int().min(200).default(15_000),
      /**
       * Logical replication carries no DDL: what a pipeline does when a source table changes
       * shape (seen in the stream, at the change). A mapped column that disappears (dropped or
       * renamed) or changes to a type the target cannot take always stops the pipeline there,
       * nothing lost; a widening type change is applied (the service's column widened) and recorded.
       */
      schemaChanges: z
        .strictObject({
          /** A new source column: ignore (recorded, not carried), add (added to the service's table, carried), stop. */
          newColumn: z.enum(['ignore', 'add', 'stop']).default('ignore'),
          /** TRUNCATE of a synced table: apply it on the target, or stop there. */
          truncate: z.enum(['apply', 'stop']).default('apply'),
        })
        .prefault({}),
    })
    .prefault({}),
  /** Defaults of the cutover commands (flags override them). */
  cutover: z
    .strictObject({
      /**
       * After a switch (--full, or a progressive canary reaching 100), keep analysing the prefix
       * this long (service errors against legacy's figures before the switch, available
       * instances) and roll back by itself on failure. 0: no bake. `--bake 5m` overrides it.
       */
      bakeSeconds: z.number().int().min(0).max(7 * 24 * 3600).default(0),
      /** Traffic analysed per bake analysis (and for legacy's baseline before the switch, at least 5 minutes). */
      bakeIntervalSeconds: z.number().int().min(1).max(3600).default(30),
    })
    .prefault({}),
  /** How service instances register themselves (discovery: registry). */
  registry: z
    .strictObject({
      /** An instance that stops heartbeating leaves the registry after this long. */
      ttlMs: z.number().int().min(500).default(5_000),
      heartbeatMs: z.number().int().min(100).default(1_000),
      /** On a graceful stop: time between deregistering and closing, for gateways to stop sending. */
      drainMs: z.number().int().min(0).default(1_500),
      /**
       * Hosts a registered instance's URL may point at: hostnames, IP addresses or CIDRs. Empty:
       * any. Whoever can write to Redis can register an instance; this bounds where traffic can go.
       */
      allowedHosts: z.array(z.string().min(1)).default([]),
    })
    .prefault({}),
  /**
   * What `strangler dev up` runs besides the private Postgres and Redis, the databases named
   * here and the gateway. Nothing by default: the toolkit assumes no monolith.
   */
  dev: z
    .strictObject({
      /** Where setup commands and processes run, relative to strangler.yaml's directory. */
      cwd: z.string().min(1).default('.'),
      /** Shell commands run once, in order, once the databases exist and before any process starts (schema, seed data). */
      setup: z.array(z.string().min(1)).default([]),
      /** Started in order, each waited for (port, health) before the next; stopped in reverse. */
      processes: z.array(devProcessSchema).default([]),
    })
    .prefault({}),
  /**
   * OpenTelemetry traces of requests (gateway, services, their database queries), exported over
   * OTLP/HTTP. Off (nothing loaded, nothing added to a request) until `endpoint` is set.
   */
  tracing: z
    .strictObject({
      /** OTLP/HTTP traces URL: Jaeger, Tempo or an OpenTelemetry Collector, e.g. http://127.0.0.1:4318/v1/traces. */
      endpoint: httpUrl.optional(),
      /**
       * Share of the traces started here that are recorded (0 to 1). A request that arrives with a
       * traceparent follows its caller's decision (parent-based), so a trace is whole or absent.
       */
      sampleRatio: z.number().min(0).max(1).default(0.1),
      /** service.name of the gateway's spans (services name theirs after themselves). */
      serviceName: z.string().min(1).default('strangler-gateway'),
    })
    .prefault({}),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  services: z.array(serviceSchema).default([]),
});

export type StranglerConfig = z.infer<typeof configSchema>;
export type ServiceConfig = z.infer<typeof serviceSchema>;
export type TableMapping = z.infer<typeof tableMappingSchema>;
export type DevProcessConfig = z.infer<typeof devProcessSchema>;
