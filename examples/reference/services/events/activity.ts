/**
 * Analytics' use of the domain events: per user and day, what happened (invoices created and
 * paid, documents read), refreshed within a relay interval of the change rather than at the
 * sync's pace, and served at GET /api/analytics/activity. Counters are only right if each event
 * is applied once, which the consumer guarantees (events.ts). The other analytics answers are
 * computed from the replicated invoices and do not depend on events.
 *
 * Only writes served by the services are evented: the monolith has no outbox, so during a canary
 * the activity counts the service's share of writes.
 */
import { Router } from 'express';
import type { Knex } from 'knex';
import { z } from 'zod';
import type { RequestHandler } from 'express';
import { parseInput } from '../kit/validate.ts';
import { userId } from '../../monolith/api/context.ts';
import type { DomainEvent } from './events.ts';

export const ACTIVITY_TABLE = 'analytics_activity';

export const ACTIVITY_DDL = `CREATE TABLE IF NOT EXISTS ${ACTIVITY_TABLE} (
  user_id integer NOT NULL, day date NOT NULL, invoices_created integer NOT NULL DEFAULT 0, invoices_paid integer NOT NULL DEFAULT 0,
  paid_total numeric(14,2) NOT NULL DEFAULT 0, documents_read integer NOT NULL DEFAULT 0, last_event_at timestamptz NOT NULL,
  PRIMARY KEY (user_id, day))`;

/** The increments an event makes to its user's day. */
function increments(event: DomainEvent): Record<string, number> {
  switch (event.type) {
    case 'invoice.created':
      return { invoices_created: 1 };
    case 'invoice.paid':
      return { invoices_paid: 1, paid_total: Number(event.data.total ?? 0) };
    case 'ocr.completed':
      return { documents_read: 1 };
  }
}

/** The consumer's handler: adds the event to its user's day, in the consumer's transaction. */
export async function applyActivity(trx: Knex.Transaction, event: DomainEvent): Promise<void> {
  const inc = increments(event);
  const columns = Object.keys(inc);
  await trx.raw(
    `INSERT INTO ${ACTIVITY_TABLE} (user_id, day, ${columns.join(', ')}, last_event_at) VALUES (?, (?::timestamptz AT TIME ZONE 'UTC')::date, ${columns.map(() => '?').join(', ')}, ?)
     ON CONFLICT (user_id, day) DO UPDATE SET ${columns.map((c) => `${c} = ${ACTIVITY_TABLE}.${c} + excluded.${c}`).join(', ')},
       last_event_at = greatest(${ACTIVITY_TABLE}.last_event_at, excluded.last_event_at)`,
    [event.userId, event.occurredAt, ...columns.map((c) => inc[c]), event.occurredAt],
  );
}

const ActivityQuery = z.object({ days: z.coerce.number().int().min(1).max(366).default(30) }).strict();

/** GET /activity: the caller's last `days` days (UTC) with any event, oldest first. */
export function createActivityRouter(ctx: { db: Knex; requireUser: RequestHandler }): Router {
  const router = Router();
  router.get('/activity', ctx.requireUser, async (req, res) => {
    const q = parseInput(ActivityQuery, req.query, 'query');
    const rows = await ctx.db(ACTIVITY_TABLE)
      .select(ctx.db.raw(`to_char(day, 'YYYY-MM-DD') AS day`), 'invoices_created', 'invoices_paid', ctx.db.raw('paid_total::text AS paid_total'), 'documents_read', 'last_event_at')
      .where({ user_id: userId(req) })
      .andWhereRaw(`day > (now() AT TIME ZONE 'UTC')::date - ?::int`, [q.days])
      .orderBy('day');
    res.json({
      items: rows.map((r) => ({ day: r.day, invoicesCreated: r.invoices_created, invoicesPaid: r.invoices_paid, paidTotal: r.paid_total, documentsRead: r.documents_read, lastEventAt: r.last_event_at })),
    });
  });
  return router;
}
