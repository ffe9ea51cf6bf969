import type { Express } from 'express';
import type { Knex } from 'knex';
import type { ResolvedConfig } from '../../../core/config/load.ts';
import { requireSecret } from '../../../core/config/secrets.ts';
import { createLogger, type Logger } from '../../../core/logger.ts';
import { createApp, finishApp, listen, type RunningServer } from '../services/kit/app.ts';
import { createTokenVerifier, signLegacyToken } from '../services/kit/jwt.ts';
import { createRequireUser } from '../services/kit/require-user.ts';
import { createAnalyticsRouter } from './api/analytics.ts';
import { createAuthRouter } from './api/auth.ts';
import { createChatRouter } from './api/chat.ts';
import { createInvoicesRouter } from './api/invoices.ts';
import { createOcrRouter } from './api/ocr.ts';
import { createTemplatesRouter } from './api/templates.ts';
import { openDatabase } from './db.ts';
import { createOcrEngine, type OcrEngine } from './ocr/ocr-engine.ts';
import { LEGACY_TABLES } from './tables.ts';
import { databaseName, startTracing, traceKnex, type Tracing } from '../../../sdk/tracing.ts';

export interface LegacyAppDeps {
  db: Knex;
  logger: Logger;
  ocr: OcrEngine;
  legacy: ResolvedConfig['legacy'];
  tracing?: Tracing;
}

/** The monolith signs its tokens with legacy.jwtSecret: it does not start without one. */
export function legacySecret(config: Parameters<typeof requireSecret>[0]): string {
  return requireSecret(config, 'legacyJwtSecret', 'the monolith signs and verifies its tokens with it');
}

/** The reference monolith: every /api prefix in one Express app on one database. */
export function createLegacyApp(deps: LegacyAppDeps): Express {
  const secret = legacySecret({ legacy: deps.legacy, gateway: {} });
  const issuer = { secret, issuer: deps.legacy.jwtIssuer, ttlSeconds: deps.legacy.tokenTtlSeconds };
  const requireUser = createRequireUser(createTokenVerifier({ legacy: issuer }));
  const ctx = { db: deps.db, tables: LEGACY_TABLES, requireUser, logger: deps.logger };
  const app = createApp({ name: 'legacy', logger: deps.logger, health: { database: () => deps.db.raw('SELECT 1') }, tracing: deps.tracing });
  app.use('/api/auth', createAuthRouter({ ...ctx, issueToken: async (user) => ({ token: await signLegacyToken(user, issuer), expiresIn: issuer.ttlSeconds }) }));
  app.use('/api/invoices', createInvoicesRouter(ctx));
  app.use('/api/templates', createTemplatesRouter(ctx));
  app.use('/api/ocr', createOcrRouter({ ...ctx, engine: deps.ocr, maxUploadBytes: deps.legacy.maxUploadBytes }));
  app.use('/api/analytics', createAnalyticsRouter(ctx));
  app.use('/api/chat', createChatRouter(ctx));
  return finishApp(app);
}

export interface RunningLegacy extends RunningServer {
  db: Knex;
}

/** Starts the monolith on the configured port (or `port`: 0 takes a free one). */
export async function startLegacyApp(config: ResolvedConfig, options: { port?: number; host?: string; logger?: Logger } = {}): Promise<RunningLegacy> {
  legacySecret(config);
  const logger = options.logger ?? createLogger('legacy', config.logLevel);
  const db = openDatabase(config.legacy.databaseUrl);
  const tracing = await startTracing(config.tracing, 'legacy', logger);
  if (tracing) traceKnex(db, tracing, databaseName(config.legacy.databaseUrl));
  const ocr = createOcrEngine();
  const app = createLegacyApp({ db, logger, ocr, legacy: config.legacy, tracing });
  try {
    const server = await listen(app, options.port ?? config.legacy.port, options.host);
    return {
      ...server,
      db,
      async close(graceMs?: number) {
        await server.close(graceMs);
        await ocr.close();
        await db.destroy();
        await tracing?.shutdown().catch(() => undefined);
      },
    };
  } catch (err) {
    await ocr.close();
    await db.destroy();
    await tracing?.shutdown().catch(() => undefined);
    throw err;
  }
}
