import { Router } from 'express';
import { z } from 'zod';
import { parseInput } from '../../services/kit/validate.ts';
import { userId, type ApiContext } from './context.ts';

const RevenueQuery = z.object({ year: z.coerce.number().int().min(1970).max(2999).optional() }).strict();
const TopQuery = z.object({ limit: z.coerce.number().int().min(1).max(50).default(5) }).strict();

/** /api/analytics: read-only figures over the caller's invoices. */
export function createAnalyticsRouter(ctx: ApiContext): Router {
  const { db, tables } = ctx;
  const router = Router();
  router.use(ctx.requireUser);

  router.get('/revenue-by-month', async (req, res) => {
    const q = parseInput(RevenueQuery, req.query, 'query');
    const rows = await db(tables.invoices)
      .select(db.raw(`to_char(issue_date, 'YYYY-MM') AS month`), db.raw('sum(total)::numeric(14,2)::text AS revenue'), db.raw('count(*)::int AS invoices'))
      .where({ user_id: userId(req), status: 'paid' })
      .modify((b) => (q.year ? b.andWhereRaw('extract(year from issue_date) = ?', [q.year]) : b))
      .groupByRaw('1')
      .orderBy('month');
    res.json({ items: rows });
  });

  router.get('/totals-by-status', async (req, res) => {
    const rows = await db(tables.invoices)
      .select('status', db.raw('count(*)::int AS invoices'), db.raw('sum(total)::numeric(14,2)::text AS total'))
      .where({ user_id: userId(req) })
      .groupBy('status')
      .orderBy('status');
    res.json({ items: rows });
  });

  router.get('/top-customers', async (req, res) => {
    const q = parseInput(TopQuery, req.query, 'query');
    const rows = await db(tables.invoices)
      .select('customer_name AS customerName', db.raw('count(*)::int AS invoices'), db.raw('sum(total)::numeric(14,2)::text AS total'))
      .where({ user_id: userId(req) })
      .whereNot({ status: 'void' })
      .groupBy('customer_name')
      .orderByRaw('sum(total) DESC, customer_name ASC')
      .limit(q.limit);
    res.json({ items: rows });
  });

  return router;
}
