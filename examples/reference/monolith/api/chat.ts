import { Router } from 'express';
import type { Knex } from 'knex';
import { z } from 'zod';
import { parseInput } from '../../services/kit/validate.ts';
import { answerQuestion, type InvoiceFacts } from '../chat-assistant.ts';
import type { AppTables } from '../tables.ts';
import { userId, type ApiContext } from './context.ts';

interface ChatMessageRow {
  id: number;
  user_id: number;
  role: 'user' | 'assistant';
  content: string;
  created_at: Date;
}

function messageJson(row: ChatMessageRow) {
  return { id: row.id, role: row.role, content: row.content, createdAt: row.created_at };
}

const MessageBody = z.object({ message: z.string().trim().min(1, 'required').max(2000, 'expected at most 2000 characters') }).strict();
const ListQuery = z.object({ limit: z.coerce.number().int().min(1).max(200).default(50) }).strict();

async function loadFacts(db: Knex | Knex.Transaction, tables: AppTables, owner: number): Promise<InvoiceFacts> {
  const statuses = await db(tables.invoices)
    .select('status', db.raw('count(*)::int AS n'), db.raw('coalesce(sum(total), 0)::numeric(14,2)::text AS total'))
    .where({ user_id: owner })
    .groupBy('status');
  const facts: InvoiceFacts = {
    counts: { draft: 0, sent: 0, paid: 0, void: 0 },
    totals: { draft: '0.00', sent: '0.00', paid: '0.00', void: '0.00' },
    overdue: { count: 0, total: '0.00' },
    topCustomer: null,
    currency: 'EUR',
  };
  for (const s of statuses as Array<{ status: keyof InvoiceFacts['counts']; n: number; total: string }>) {
    facts.counts[s.status] = s.n;
    facts.totals[s.status] = s.total;
  }
  const [overdue] = await db(tables.invoices)
    .select(db.raw('count(*)::int AS n'), db.raw('coalesce(sum(total), 0)::numeric(14,2)::text AS total'))
    .where({ user_id: owner, status: 'sent' })
    .andWhere('due_date', '<', db.raw('current_date'));
  facts.overdue = { count: overdue.n, total: overdue.total };
  const top = await db(tables.invoices)
    .select('customer_name', db.raw('sum(total)::numeric(14,2)::text AS total'))
    .where({ user_id: owner })
    .whereNot({ status: 'void' })
    .groupBy('customer_name')
    .orderByRaw('sum(total) DESC, customer_name ASC')
    .first();
  if (top) facts.topCustomer = { name: top.customer_name, total: top.total };
  return facts;
}

/** /api/chat: a rule-based assistant answering questions about the caller's invoices. */
export function createChatRouter(ctx: ApiContext): Router {
  const { db, tables } = ctx;
  const router = Router();
  router.use(ctx.requireUser);

  router.post('/messages', async (req, res) => {
    const { message } = parseInput(MessageBody, req.body);
    const owner = userId(req);
    const answer = answerQuestion(message, await loadFacts(db, tables, owner));
    const [question, reply] = await db<ChatMessageRow>(tables.chatMessages)
      .insert([
        { user_id: owner, role: 'user', content: message },
        { user_id: owner, role: 'assistant', content: answer },
      ])
      .returning('*');
    res.status(201).json({ question: messageJson(question), answer: messageJson(reply) });
  });

  router.get('/messages', async (req, res) => {
    const q = parseInput(ListQuery, req.query, 'query');
    const rows = await db<ChatMessageRow>(tables.chatMessages).where({ user_id: userId(req) }).orderBy('id', 'desc').limit(q.limit);
    res.json({ items: rows.reverse().map(messageJson) });
  });

  return router;
}
