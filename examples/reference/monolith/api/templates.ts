import { Router } from 'express';
import { z } from 'zod';
import { HttpError } from '../../services/kit/http-error.ts';
import { idParam, parseInput } from '../../services/kit/validate.ts';
import { renderTemplate, unclosedSections } from '../template-render.ts';
import { userId, type ApiContext } from './context.ts';
import { invoiceJson, type InvoiceItemRow, type InvoiceRow } from './invoices.ts';

interface TemplateRow {
  id: number;
  user_id: number;
  name: string;
  body: string;
  is_default: boolean;
  created_at: Date;
  updated_at: Date;
}

function templateJson(row: TemplateRow) {
  return { id: row.id, name: row.name, body: row.body, isDefault: row.is_default, createdAt: row.created_at, updatedAt: row.updated_at };
}

const body = z
  .string()
  .min(1, 'required')
  .max(200_000, 'expected at most 200000 characters')
  .refine((b) => unclosedSections(b).length === 0, { message: 'a {{#section}} is never closed with {{/section}}' });
const CreateBody = z.object({ name: z.string().trim().min(1, 'required').max(200), body, isDefault: z.boolean().optional() }).strict();
const UpdateBody = CreateBody.partial().strict();
const RenderBody = z.object({ invoiceId: z.number().int().positive() }).strict();

/** /api/templates: CRUD of invoice templates, and rendering an invoice with one to HTML. */
export function createTemplatesRouter(ctx: ApiContext): Router {
  const { db, tables } = ctx;
  const router = Router();
  router.use(ctx.requireUser);
  const owned = async (id: number, owner: number) => {
    const row = await db<TemplateRow>(tables.templates).where({ id, user_id: owner }).first();
    if (!row) throw new HttpError(`template ${id} not found`, 'NOT_FOUND');
    return row;
  };

  router.get('/', async (req, res) => {
    const rows = await db<TemplateRow>(tables.templates).where({ user_id: userId(req) }).orderBy('id');
    res.json({ items: rows.map(templateJson) });
  });

  router.get('/:id', async (req, res) => {
    res.json(templateJson(await owned(idParam(req.params.id, 'template'), userId(req))));
  });

  router.post('/', async (req, res) => {
    const input = parseInput(CreateBody, req.body);
    const [row] = await db<TemplateRow>(tables.templates)
      .insert({ user_id: userId(req), name: input.name, body: input.body, is_default: input.isDefault ?? false })
      .returning('*');
    res.status(201).location(`${req.baseUrl}/${row.id}`).json(templateJson(row));
  });

  const update = async (req: import('express').Request, res: import('express').Response) => {
    const input = parseInput(UpdateBody, req.body);
    const id = idParam(req.params.id, 'template');
    await owned(id, userId(req));
    const patch: Record<string, unknown> = { updated_at: db.fn.now() };
    if (input.name !== undefined) patch.name = input.name;
    if (input.body !== undefined) patch.body = input.body;
    if (input.isDefault !== undefined) patch.is_default = input.isDefault;
    const [row] = await db<TemplateRow>(tables.templates).where({ id }).update(patch).returning('*');
    res.json(templateJson(row));
  };
  router.put('/:id', update);
  router.patch('/:id', update);

  router.delete('/:id', async (req, res) => {
    const id = idParam(req.params.id, 'template');
    await owned(id, userId(req));
    await db(tables.templates).where({ id }).delete();
    res.status(204).end();
  });

  router.post('/:id/render', async (req, res) => {
    const template = await owned(idParam(req.params.id, 'template'), userId(req));
    const input = parseInput(RenderBody, req.body);
    const invoice = await db<InvoiceRow>(tables.invoices).where({ id: input.invoiceId, user_id: userId(req) }).first();
    if (!invoice) throw new HttpError(`invoice ${input.invoiceId} not found`, 'NOT_FOUND');
    const items = await db<InvoiceItemRow>(tables.invoiceItems).where({ invoice_id: invoice.id }).orderBy('position');
    res.type('html').send(renderTemplate(template.body, { invoice: invoiceJson(invoice, items), items: invoiceJson(invoice, items).items }));
  });

  return router;
}
