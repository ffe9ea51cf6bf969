import type { RequestHandler } from 'express';
import type { Knex } from 'knex';
import type { Logger } from '../../../../core/logger.ts';
import type { EventRecorder } from '../../services/events/events.ts';
import type { AppTables } from '../tables.ts';

/** What every API router of the monolith (and of a service reusing it) is built from. */
export interface ApiContext {
  db: Knex;
  tables: AppTables;
  /** Verifies the bearer token and sets req.user. */
  requireUser: RequestHandler;
  logger: Logger;
  /** Domain events, written in the transaction of the change (services only: the monolith has no outbox). */
  events?: EventRecorder;
}

/** Express 5 passes rejected promises to the error handler; this only narrows the type. */
export function userId(req: { user?: { id: number } }): number {
  if (!req.user) throw new Error('requireUser must run before this handler');
  return req.user.id;
}
