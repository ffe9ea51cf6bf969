import type { Express } from 'express';
import type { Knex } from 'knex';
import type { ResolvedConfig, ResolvedService } from '../../../core/config/load.ts';
import { serviceByName } from '../../../core/config/load.ts';
import { requireSecret } from '../../../core/config/secrets.ts';
import { errorBody } from '../../../core/errors.ts';
import { createLogger, type Logger } from '../../../core/logger.ts';
import { backgroundDeadlineMs, boundedRedisOptions, redisReady } from '../../../core/redis-health.ts';
import { createAnalyticsRouter } from '../monolith/api/analytics.ts';
import { createAuthRouter } from '../monolith/api/auth.ts';
import { createChatRouter } from '../monolith/api/chat.ts';
import { createInvoicesRouter } from '../monolith/api/invoices.ts';
import { createOcrRouter } from '../monolith/api/ocr.ts';
import { createTemplatesRouter } from '../monolith/api/templates.ts';
import { openDatabase } from '../monolith/db.ts';
import { createOcrEngine, type OcrEngine } from '../monolith/ocr/ocr-engine.ts';
import { hostname } from 'node:os';
import { Redis } from 'ioredis';
import { createActivityRouter, applyActivity } from './events/activity.ts';
import { EVENT_SOURCES, outboxRecorder, startEventConsumer, startOutboxRelay, type EventConsumer, type OutboxRelay } from './events/events.ts';
import { createOcrJobsRouter } from './ocr/jobs-router.ts';
import { createOcrQueue, startOcrWorker } from './ocr/queue.ts';
import { LEGACY_TABLES, type AppTables } from '../monolith/tables.ts';
import { migrateService } from '../migrations/services/index.ts';
import { keyPolicy, signingKeys } from './auth/keys.ts';
import type { KeyPolicy } from './auth/rotation.ts';
import { createApp, finishApp, listen, type RunningServer } from './kit/app.ts';
import { AUTH_ISSUER, createTokenVerifier, JWKS_MAX_AGE_SECONDS, JWKS_PATH, jwksFor, signLegacyToken } from './kit/jwt.ts';
import { createRequireUser } from './kit/require-user.ts';
import { registerInstance, type InstanceOptions, type InstanceRegistration } from '../../../sdk/registration.ts';
import { databaseName, startTracing, traceKnex, type Tracing } from '../../../sdk/tracing.ts';

export { AUTH_ISSUER, JWKS_PATH };

/** How long the analytics event consumer's XREADGROUP blocks waiting for events. */
const EVENT_BLOCK_MS = 1_000;

export interface ServiceAppOptions {
  /**
   * Which tokens the auth service issues. `legacy` (the default until every prefix is cut over):
   * HS256 tokens the monolith accepts, so a user stays logged in across cutover and rollback.
   * `rs256`: its own keys, verified everywhere through the JWKS.
   */
  tokenFormat?: 'legacy' | 'rs256';
  /** Auth: how long signing keys overlap (default: from the token lifetime, services/auth/keys.ts). */
  signingKeyPolicy?: KeyPolicy;
  ocr?: OcrEngine;
  /** OCR: workers run inside the service process (0: only separate `reference ocr worker` processes). */
  ocrWorkers?: number;
  /** OCR: how long the synchronous POST waits for its job. */
  ocrWaitMs?: number;
  /** Analytics: the event consumer's name in its group (default: per host and port). */
  eventConsumer?: string;
  /** Analytics: how long another consumer's unacknowledged event waits before this one takes it. */
  eventClaimIdleMs?: number;
  /** How the instance registers (advertised URL, version, zone); `false`: not at all. */
  instance?: InstanceOptions | false;
}

/** The service's table names: the targets of its strangler.yaml mapping, legacy names otherwise. */
export function tablesFor(service: ResolvedService): AppTables {
  const target = (source: string) => service.tables.find((t) => t.source === source)?.target ?? source;
  return {
    users: target(LEGACY_TABLES.users),
    invoices: target(LEGACY_TABLES.invoices),
    invoiceItems: target(LEGACY_TABLES.invoiceItems),
    templates: target(LEGACY_TABLES.templates),
    ocrDocuments: target(LEGACY_TABLES.ocrDocuments),
    chatMessages: target(LEGACY_TABLES.chatMessages),
  };
}

/** Every service verifies the monolith's tokens (and auth signs them): none starts without the secret. */
function serviceSecret(config: ResolvedConfig): string {
  return requireSecret(config, 'legacyJwtSecret', "every service verifies the monolith's tokens with it");
}

/**
 * An extracted service: the same handlers as the monolith on the service's own database and
 * tables (so the contract cannot drift), its own token verification (both issuers), /health.
 */
export function createServiceApp(config: ResolvedConfig, service: ResolvedService, deps: { db: Knex; logger: Logger; ocr?: OcrEngine; ocrQueue?: ReturnType<typeof createOcrQueue>; tracing?: Tracing }, options: ServiceAppOptions = {}): Express {
  const secret = serviceSecret(config);
  const verify = createTokenVerifier({ legacy: { secret, issuer: config.legacy.jwtIssuer }, jwks: jwksFor(config), jwksTimeoutMs: config.gateway.jwksTimeoutMs });
  const publishes = (EVENT_SOURCES as readonly string[]).includes(service.name);
  const ctx = { db: deps.db, tables: tablesFor(service), requireUser: createRequireUser(verify), logger: deps.logger, events: publishes ? outboxRecorder : undefined };
  const app = createApp({ name: service.name, logger: deps.logger, health: { database: () => deps.db.raw('SELECT 1') }, tracing: deps.tracing });
  switch (service.name) {
    case 'auth': {
      const keys = signingKeys(deps.db, options.signingKeyPolicy ?? keyPolicy(config.legacy.tokenTtlSeconds));
      const ttl = config.legacy.tokenTtlSeconds;
      const legacyIssuer = { secret, issuer: config.legacy.jwtIssuer, ttlSeconds: ttl };
      app.get(JWKS_PATH, async (_req, res) => {
        res.setHeader('cache-control', `public, max-age=${JWKS_MAX_AGE_SECONDS}`);
        res.json(await keys.jwks());
      });
      app.use(service.prefix, createAuthRouter({
        ...ctx,
        issueToken: async (user) => ({ token: options.tokenFormat === 'rs256' ? await keys.sign(user, AUTH_ISSUER, ttl) : await signLegacyToken(user, legacyIssuer), expiresIn: ttl }),
      }));
      break;
    }
    case 'invoices':
      app.use(service.prefix, createInvoicesRouter(ctx));
      break;
    case 'templates':
      app.use(service.prefix, createTemplatesRouter(ctx));
      break;
    case 'ocr':
      // Uploads go through the job queue; the document routes are the monolith's.
      if (deps.ocrQueue) app.use(service.prefix, createOcrJobsRouter({ ...ctx, queue: deps.ocrQueue.queue, queueEvents: deps.ocrQueue.events, maxUploadBytes: config.legacy.maxUploadBytes, waitMs: options.ocrWaitMs ?? 30_000, queueTimeoutMs: backgroundDeadlineMs(config.redis) }));
      app.use(service.prefix, createOcrRouter({ ...ctx, engine: deps.ocr ?? createOcrEngine(), maxUploadBytes: config.legacy.maxUploadBytes }));
      break;
    case 'chat':
      app.use(service.prefix, createChatRouter(ctx));
      break;
    case 'analytics':
      // Read-only: its data is a replica; a write here would be lost at the next sync.
      app.use(service.prefix, (req, res, next) => {
        if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') return next();
        res.setHeader('allow', 'GET, HEAD, OPTIONS');
        res.status(405).json(errorBody('METHOD_NOT_ALLOWED', 'analytics is read-only; write invoices through /api/invoices'));
      });
      app.use(service.prefix, createActivityRouter(ctx));
      app.use(service.prefix, createAnalyticsRouter(ctx));
      break;
    default:
      throw new Error(`no handlers for service "${service.name}"`);
  }
  return finishApp(app);
}

export interface RunningService extends RunningServer {
  db: Knex;
  /** Its entry in the registry (absent with `instance: false`). */
  registration?: InstanceRegistration;
}

/** `reference service <name>`: migrates the service database, then serves on the service port. */
export async function startService(config: ResolvedConfig, name: string, options: ServiceAppOptions & { port?: number; host?: string; logger?: Logger } = {}): Promise<RunningService> {
  const service = serviceByName(config, name);
  serviceSecret(config); // refused before touching its database
  const logger = options.logger ?? createLogger(name, config.logLevel);
  await migrateService(service);
  const db = openDatabase(service.databaseUrl);
  // Tracing (off unless tracing.endpoint is set): a span per request, and per query it runs.
  const tracing = await startTracing(config.tracing, service.name, logger);
  if (tracing) traceKnex(db, tracing, databaseName(service.databaseUrl));
  const ocr = service.name === 'ocr' ? (options.ocr ?? createOcrEngine()) : undefined;
  const ocrQueue = service.name === 'ocr' ? createOcrQueue(config) : undefined;
  const workers = service.name === 'ocr' && (options.ocrWorkers ?? 1) > 0 ? startOcrWorker(config, db, logger, { concurrency: options.ocrWorkers ?? 1 }) : undefined;
  // Events: publishers relay their outbox to their stream; analytics consumes both streams. Every
  // command has a deadline (a frozen Redis never answers); the consumer's has its XREADGROUP
  // BLOCK time on top.
  const consumes = service.name === 'analytics';
  const redis = (EVENT_SOURCES as readonly string[]).includes(service.name) || consumes
    ? new Redis(config.redis.url, boundedRedisOptions({ commandTimeoutMs: backgroundDeadlineMs(config.redis) + (consumes ? EVENT_BLOCK_MS : 0) }))
    : undefined;
  redis?.on('error', () => undefined);
  if (redis) await redisReady(redis, 2_000);
  let relay: OutboxRelay | undefined;
  let consumer: EventConsumer | undefined;
  const closeAll = async () => {
    await consumer?.stop();
    await relay?.stop();
    redis?.disconnect();
    await workers?.close();
    await ocrQueue?.close();
    await ocr?.close();
    await db.destroy();
    await tracing?.shutdown().catch(() => undefined);
  };
  try {
    // The auth service's first RS256 key is made at its first start, in its own database.
    if (service.name === 'auth') await signingKeys(db, options.signingKeyPolicy ?? keyPolicy(config.legacy.tokenTtlSeconds)).ensure();
    if (redis && service.name === 'analytics') {
      consumer = await startEventConsumer({
        redis, db, logger, keyPrefix: config.redis.keyPrefix, sources: EVENT_SOURCES, group: 'analytics', handle: applyActivity, blockMs: EVENT_BLOCK_MS,
        // Stable per instance, so a restarted instance re-reads what it had not acknowledged.
        consumer: options.eventConsumer ?? `analytics-${hostname()}-${options.port || service.port || process.pid}`,
        claimIdleMs: options.eventClaimIdleMs,
      });
    } else if (redis) {
      relay = startOutboxRelay({ db, redis, keyPrefix: config.redis.keyPrefix, source: service.name, logger });
    }
    const server = await listen(createServiceApp(config, service, { db, logger, ocr, ocrQueue, tracing }, options), options.port ?? service.port, options.host);
    const registration = options.instance === false ? undefined : await registerInstance(config, service, server.url, options.instance ?? {}, logger);
    let closing: Promise<void> | null = null;
    return {
      ...server,
      db,
      registration,
      close(graceMs?: number) {
        // Leave the registry first, then let in-flight requests finish: a graceful stop loses none.
        closing ??= (async () => {
          await registration?.leave();
          await server.close(graceMs);
          await closeAll();
        })();
        return closing;
      },
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}
