import { Router } from 'express';
import type { Knex } from 'knex';
import { z } from 'zod';
import { HttpError } from '../../services/kit/http-error.ts';
import { idParam, parseInput } from '../../services/kit/validate.ts';
import { computeTotals as computeRawTotals, fitsMoneyColumn, MONEY, PERCENT, QUANTITY } from '../invoice-math.ts';
import type { AppTables } from '../tables.ts';
import { userId, type ApiContext } from './context.ts';

export const INVOICE_STATUSES = ['draft', 'sent', 'paid', 'void'] as const;

export interface InvoiceRow {
  id: number;
  user_id: number;
  number: string;
  customer_name: string;
  customer_email: string | null;
  status: (typeof INVOICE_STATUSES)[number];
  currency: string;
  issue_date: string;
  due_date: string | null;
  subtotal: string;
  tax_rate: string;
  tax: string;
  total: string;
  tags: string[];
  metadata: Record<string, unknown>;
  paid_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

export interface InvoiceItemRow {
  id: number;
  invoice_id: number;
  position: number;
  description: string;
  quantity: string;
  unit_price: string;
  amount: string;
}

export function invoiceJson(row: InvoiceRow, items?: InvoiceItemRow[]) {
  return {
    id: row.id,
    number: row.number,
    customerName: row.customer_name,
    customerEmail: row.customer_email,
    status: row.status,
    currency: row.currency,
    issueDate: row.issue_date,
    dueDate: row.due_date,
    subtotal: row.subtotal,
    taxRate: row.tax_rate,
    tax: row.tax,
    total: row.total,
    tags: row.tags,
    metadata: row.metadata,
    paidAt: row.paid_at,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    ...(items ? { items: items.map(itemJson) } : {}),
  };
}

function itemJson(row: InvoiceItemRow) {
  return { id: row.id, position: row.position, description: row.description, quantity: row.quantity, unitPrice: row.unit_price, amount: row.amount };
}

const decimal = (pattern: RegExp, what: string) =>
  z.union([z.string(), z.number()]).transform((v) => String(v)).refine((v) => pattern.test(v), `expected ${what}`);
const date = z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'expected a date YYYY-MM-DD');
const Item = z.object({
  description: z.string().trim().min(1, 'required').max(500),
  quantity: decimal(QUANTITY, 'a quantity > 0 with at most 3 decimals').refine((v) => Number(v) > 0, 'expected a quantity > 0'),
  unitPrice: decimal(MONEY, 'an amount with at most 2 decimals, e.g. "12.50"'),
});
const fields = {
  number: z.string().trim().min(1).max(40),
  customerName: z.string().trim().min(1, 'required').max(200),
  customerEmail: z.string().trim().email('expected an email address').max(254).nullable(),
  currency: z.string().regex(/^[A-Z]{3}$/, 'expected a 3-letter ISO currency code, e.g. "EUR"'),
  issueDate: date,
  dueDate: date.nullable(),
  taxRate: decimal(PERCENT, 'a percentage with at most 2 decimals'),
  tags: z.array(z.string().min(1).max(40)).max(20),
  metadata: z.record(z.string(), z.unknown()),
  items: z.array(Item).min(1, 'expected at least one line item').max(200),
};
const CreateBody = z.object({ ...fields, status: z.enum(['draft', 'sent']) }).partial().required({ customerName: true, items: true }).strict();
const UpdateBody = z.object({ ...fields, status: z.enum(['draft', 'sent', 'void']) }).partial().strict();
const ListQuery = z.object({
  page: z.coerce.number().int().min(1).default(1),
  pageSize: z.coerce.number().int().min(1).max(100).default(20),
  status: z.enum(INVOICE_STATUSES).optional(),
  customer: z.string().max(200).optional(),
});

/** Totals, refused with a 400 when one would overflow the money columns (rather than a 500 from Postgres). */
function computeTotals(items: Array<{ quantity: string; unitPrice: string }>, taxRate: string) {
  const totals = computeRawTotals(items, taxRate);
  const bad = totals.amounts.findIndex((a) => !fitsMoneyColumn(a));
  if (bad >= 0) throw new HttpError(`invalid body: items[${bad}]: the line amount ${totals.amounts[bad]} is larger than 9999999999.99`, 'VALIDATION_FAILED');
  if (![totals.subtotal, totals.tax, totals.total].every(fitsMoneyColumn)) throw new HttpError(`invalid body: items: the invoice total ${totals.total} is larger than 9999999999.99`, 'VALIDATION_FAILED');
  return totals;
}

/** Loads an invoice the caller owns, or 404: another user's invoice does not exist for them. */
async function ownedInvoice(db: Knex | Knex.Transaction, tables: AppTables, id: number, owner: number, forUpdate = false): Promise<InvoiceRow> {
  const query = db<InvoiceRow>(tables.invoices).where({ id, user_id: owner }).first();
  const row = await (forUpdate ? query.forUpdate() : query);
  if (!row) throw new HttpError(`invoice ${id} not found`, 'NOT_FOUND');
  return row;
}

async function itemsOf(db: Knex | Knex.Transaction, tables: AppTables, invoiceId: number): Promise<InvoiceItemRow[]> {
  return db<InvoiceItemRow>(tables.invoiceItems).where({ invoice_id: invoiceId }).orderBy('position');
}

async function writeItems(trx: Knex.Transaction, tables: AppTables, invoiceId: number, items: z.output<typeof Item>[], amounts: string[]) {
  await trx(tables.invoiceItems).where({ invoice_id: invoiceId }).delete();
  await trx(tables.invoiceItems).insert(
    items.map((item, i) => ({ invoice_id: invoiceId, position: i + 1, description: item.description, quantity: item.quantity, unit_price: item.unitPrice, amount: amounts[i] })),
  );
}

/** /api/invoices: list, get, create, update, delete, pay. Totals are computed here, never taken from the client. */
export function createInvoicesRouter(ctx: ApiContext): Router {
  const { db, tables } = ctx;
  const router = Router();
  router.use(ctx.requireUser);

  router.get('/', async (req, res) => {
    const q = parseInput(ListQuery, req.query, 'query');
    const base = db<InvoiceRow>(tables.invoices).where({ user_id: userId(req) });
    if (q.status) base.andWhere({ status: q.status });
    if (q.customer) base.andWhere('customer_name', 'ilike', `%${q.customer.replace(/[\\%_]/g, (c) => `\\${c}`)}%`);
    const [{ count }] = await base.clone().count<{ count: string }[]>({ count: '*' });
    const rows = await base.orderBy('id', 'desc').limit(q.pageSize).offset((q.page - 1) * q.pageSize);
    res.json({ items: rows.map((r) => invoiceJson(r)), page: q.page, pageSize: q.pageSize, total: Number(count) });
  });

  router.get('/:id', async (req, res) => {
    const row = await ownedInvoice(db, tables, idParam(req.params.id, 'invoice'), userId(req));
    res.json(invoiceJson(row, await itemsOf(db, tables, row.id)));
  });

  router.post('/', async (req, res) => {
    const body = parseInput(CreateBody, req.body);
    const totals = computeTotals(body.items, body.taxRate ?? '0');
    const result = await db.transaction(async (trx) => {
      const [row] = await trx<InvoiceRow>(tables.invoices)
        .insert({
          user_id: userId(req),
          number: body.number ?? 'pending',
          customer_name: body.customerName,
          customer_email: body.customerEmail ?? null,
          status: body.status ?? 'draft',
          currency: body.currency ?? 'EUR',
          ...(body.issueDate ? { issue_date: body.issueDate } : {}),
          due_date: body.dueDate ?? null,
          tax_rate: body.taxRate ?? '0',
          subtotal: totals.subtotal,
          tax: totals.tax,
          total: totals.total,
          tags: body.tags ?? [],
          metadata: JSON.stringify(body.metadata ?? {}) as never,
        })
        .returning('*');
      let invoice = row;
      if (!body.number) {
        // The number derives from the id, so it is unique wherever the row was created.
        [invoice] = await trx<InvoiceRow>(tables.invoices).where({ id: row.id }).update({ number: `INV-${String(row.id).padStart(6, '0')}` }).returning('*');
      }
      await writeItems(trx, tables, invoice.id, body.items, totals.amounts);
      await ctx.events?.record(trx, 'invoice.created', invoice.user_id, { invoiceId: invoice.id, number: invoice.number, status: invoice.status, total: invoice.total, currency: invoice.currency });
      return invoiceJson(invoice, await itemsOf(trx, tables, invoice.id));
    });
    res.status(201).location(`${req.baseUrl}/${result.id}`).json(result);
  });

  const update = async (req: import('express').Request, res: import('express').Response) => {
    const body = parseInput(UpdateBody, req.body);
    const id = idParam(req.params.id, 'invoice');
    const result = await db.transaction(async (trx) => {
      const current = await ownedInvoice(trx, tables, id, userId(req), true);
      if (current.status === 'paid' || current.status === 'void') {
        throw new HttpError(`invoice ${id} is ${current.status}; it can no longer be changed`, 'CONFLICT');
      }
      const patch: Record<string, unknown> = { updated_at: trx.fn.now() };
      if (body.number !== undefined) patch.number = body.number;
      if (body.customerName !== undefined) patch.customer_name = body.customerName;
      if (body.customerEmail !== undefined) patch.customer_email = body.customerEmail;
      if (body.status !== undefined) patch.status = body.status;
      if (body.currency !== undefined) patch.currency = body.currency;
      if (body.issueDate !== undefined) patch.issue_date = body.issueDate;
      if (body.dueDate !== undefined) patch.due_date = body.dueDate;
      if (body.tags !== undefined) patch.tags = body.tags;
      if (body.metadata !== undefined) patch.metadata = JSON.stringify(body.metadata);
      if (body.items !== undefined || body.taxRate !== undefined) {
        const items = body.items ?? (await itemsOf(trx, tables, id)).map((r) => ({ description: r.description, quantity: r.quantity, unitPrice: r.unit_price }));
        const taxRate = body.taxRate ?? current.tax_rate;
        const totals = computeTotals(items, taxRate);
        Object.assign(patch, { tax_rate: taxRate, subtotal: totals.subtotal, tax: totals.tax, total: totals.total });
        if (body.items !== undefined) await writeItems(trx, tables, id, body.items, totals.amounts);
      }
      const [row] = await trx<InvoiceRow>(tables.invoices).where({ id }).update(patch).returning('*');
      return invoiceJson(row, await itemsOf(trx, tables, id));
    });
    res.json(result);
  };
  router.patch('/:id', update);
  router.put('/:id', update);

  router.delete('/:id', async (req, res) => {
    const id = idParam(req.params.id, 'invoice');
    await db.transaction(async (trx) => {
      const current = await ownedInvoice(trx, tables, id, userId(req), true);
      if (current.status === 'paid') throw new HttpError(`invoice ${id} is paid; paid invoices are kept (void it instead)`, 'CONFLICT');
      await trx(tables.invoiceItems).where({ invoice_id: id }).delete();
      await trx(tables.invoices).where({ id }).delete();
    });
    res.status(204).end();
  });

  router.post('/:id/pay', async (req, res) => {
    const id = idParam(req.params.id, 'invoice');
    const result = await db.transaction(async (trx) => {
      const current = await ownedInvoice(trx, tables, id, userId(req), true);
      if (current.status === 'paid') throw new HttpError(`invoice ${id} is already paid`, 'CONFLICT');
      if (current.status === 'void') throw new HttpError(`invoice ${id} is void and cannot be paid`, 'CONFLICT');
      const [row] = await trx<InvoiceRow>(tables.invoices).where({ id }).update({ status: 'paid', paid_at: trx.fn.now(), updated_at: trx.fn.now() } as never).returning('*');
      await ctx.events?.record(trx, 'invoice.paid', row.user_id, { invoiceId: row.id, number: row.number, total: row.total, currency: row.currency });
      return invoiceJson(row, await itemsOf(trx, tables, id));
    });
    res.json(result);
  });

  return router;
}
