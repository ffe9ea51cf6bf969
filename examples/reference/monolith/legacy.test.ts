import { SignJWT, UnsecuredJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonClient, legacyTestConfig } from '../../../test/harness.ts';
import { seedLegacy, startLegacyApp, type RunningLegacy } from './index.ts';
import { renderTextPng } from './ocr/text-image.ts';

let legacy: RunningLegacy;
let cleanup: () => Promise<void>;
let call: ReturnType<typeof jsonClient>;
let secret: string;

async function register(email: string, password = 'correct horse battery') {
  const res = await call('POST', '/api/auth/register', { email, password, displayName: email.split('@')[0] });
  expect(res.status).toBe(201);
  return res.json.token as string;
}

beforeAll(async () => {
  const t = await legacyTestConfig('legacy_api');
  cleanup = t.cleanup;
  secret = t.config.legacy.jwtSecret!;
  await seedLegacy(t.config.legacy.databaseUrl, { users: 3, invoices: 30, seed: 7 });
  legacy = await startLegacyApp(t.config, { port: 0 });
  call = jsonClient(legacy.url);
});

afterAll(async () => {
  await legacy?.close();
  await cleanup?.();
});

describe('legacy monolith /health', () => {
  it('answers ok with its database check', async () => {
    const res = await call('GET', '/health');
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ status: 'ok', service: 'legacy', checks: { database: 'ok' } });
  });

  it('answers unknown routes with a JSON 404', async () => {
    const res = await call('GET', '/api/nothing-here');
    expect(res.status).toBe(404);
    expect(res.json.error.code).toBe('NOT_FOUND');
  });
});

describe('legacy /api/auth', () => {
  it('registers, logs in and answers me', async () => {
    const token = await register('ada@example.test');
    const login = await call('POST', '/api/auth/login', { email: 'ADA@example.test', password: 'correct horse battery' });
    expect(login.status).toBe(200);
    expect(login.json).toMatchObject({ tokenType: 'Bearer', expiresIn: 3600, user: { email: 'ada@example.test', displayName: 'ada' } });
    expect(login.json.user.password_hash).toBeUndefined();
    const me = await call('GET', '/api/auth/me', undefined, token);
    expect(me.status).toBe(200);
    expect(me.json.user.email).toBe('ada@example.test');
  });

  it('logs in a seeded user with its deterministic password', async () => {
    const res = await call('POST', '/api/auth/login', { email: 'user1@example.test', password: 'password-1' });
    expect(res.status).toBe(200);
  });

  it('refuses a second account with the same email with 409', async () => {
    await register('dup@example.test');
    const res = await call('POST', '/api/auth/register', { email: 'dup@example.test', password: 'another password' });
    expect(res.status).toBe(409);
    expect(res.json.error.message).toMatch(/already exists/);
  });

  it('names each bad field of a registration', async () => {
    const res = await call('POST', '/api/auth/register', { email: 'not-an-email', password: 'short' });
    expect(res.status).toBe(400);
    expect(res.json.error.code).toBe('VALIDATION_FAILED');
    expect(res.json.error.message).toMatch(/email: expected an email address/);
    expect(res.json.error.message).toMatch(/password: expected at least 8 characters/);
  });

  it('answers a wrong password and an unknown email the same way', async () => {
    await register('bob@example.test');
    const wrong = await call('POST', '/api/auth/login', { email: 'bob@example.test', password: 'wrong password' });
    const unknown = await call('POST', '/api/auth/login', { email: 'nobody@example.test', password: 'wrong password' });
    expect(wrong.status).toBe(401);
    expect(unknown.status).toBe(401);
    expect(wrong.json).toEqual(unknown.json);
  });

  it('answers a malformed JSON body with 400', async () => {
    const res = await fetch(`${legacy.url}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"email":' });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/not valid JSON/);
  });

  it('changes a password only with the current one', async () => {
    const token = await register('carol@example.test', 'first password');
    const refused = await call('POST', '/api/auth/change-password', { currentPassword: 'nope nope', newPassword: 'second password' }, token);
    expect(refused.status).toBe(403);
    const changed = await call('POST', '/api/auth/change-password', { currentPassword: 'first password', newPassword: 'second password' }, token);
    expect(changed.status).toBe(204);
    expect((await call('POST', '/api/auth/login', { email: 'carol@example.test', password: 'first password' })).status).toBe(401);
    expect((await call('POST', '/api/auth/login', { email: 'carol@example.test', password: 'second password' })).status).toBe(200);
  });

  describe('refuses tokens it should not accept', () => {
    const key = () => new TextEncoder().encode(secret);
    const cases: Array<[string, () => Promise<string>]> = [
      ['no token', async () => ''],
      ['a token that is not a JWT', async () => 'abc.def'],
      ['alg none', async () => new UnsecuredJWT({}).setSubject('1').setIssuer('legacy').setExpirationTime('1h').encode()],
      ['a wrong key', async () => new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('1').setIssuer('legacy').setExpirationTime('1h').sign(new TextEncoder().encode('another-secret-of-32-characters!!'))],
      ['an expired token', async () => new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('1').setIssuer('legacy').setIssuedAt(1_000_000).setExpirationTime(1_000_600).sign(key())],
      ['a wrong issuer', async () => new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('1').setIssuer('evil').setExpirationTime('1h').sign(key())],
      ['HS512 with the right key', async () => new SignJWT({}).setProtectedHeader({ alg: 'HS512' }).setSubject('1').setIssuer('legacy').setExpirationTime('1h').sign(new TextEncoder().encode(secret.padEnd(64, 'x')))],
    ];
    it.each(cases)('refuses %s with 401 and WWW-Authenticate', async (_name, make) => {
      const token = await make();
      const res = await call('GET', '/api/auth/me', undefined, undefined, token ? { authorization: `Bearer ${token}` } : {});
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
      expect(res.json.error.code).toBe('UNAUTHENTICATED');
    });

    it('ignores an X-User-Id header: identity comes only from the token', async () => {
      const res = await call('GET', '/api/invoices', undefined, undefined, { 'x-user-id': '1' });
      expect(res.status).toBe(401);
    });
  });
});

describe('legacy /api/invoices', () => {
  let token: string;
  let other: string;
  beforeAll(async () => {
    token = await register('inv-owner@example.test');
    other = await register('inv-other@example.test');
  });

  const create = (body: Record<string, unknown>, t = token) => call('POST', '/api/invoices', body, t);

  it('creates an invoice with totals computed on the server', async () => {
    const res = await create({ customerName: 'Acme', taxRate: '19', tags: ['q1'], metadata: { po: 'PO-1' }, items: [{ description: 'Consulting', quantity: 2, unitPrice: '450.00' }, { description: 'Travel', quantity: '1.5', unitPrice: 33.33 }], total: '1.00' });
    // `total` is not an input: strict bodies refuse it rather than silently ignoring it.
    expect(res.status).toBe(400);
    expect(res.json.error.message).toMatch(/total/);
    const ok = await create({ customerName: 'Acme', taxRate: '19', tags: ['q1'], metadata: { po: 'PO-1' }, items: [{ description: 'Consulting', quantity: 2, unitPrice: '450.00' }, { description: 'Travel', quantity: '1.5', unitPrice: 33.33 }] });
    expect(ok.status).toBe(201);
    expect(ok.json).toMatchObject({ status: 'draft', currency: 'EUR', subtotal: '950.00', tax: '180.50', total: '1130.50', tags: ['q1'], metadata: { po: 'PO-1' } });
    expect(ok.json.number).toBe(`INV-${String(ok.json.id).padStart(6, '0')}`);
    expect(ok.json.items.map((i: { amount: string }) => i.amount)).toEqual(['900.00', '50.00']);
    expect(ok.headers.get('location')).toBe(`/api/invoices/${ok.json.id}`);
  });

  it('names the bad fields of an invoice', async () => {
    const res = await create({ customerName: '', items: [{ description: 'x', quantity: -1, unitPrice: 'abc' }] });
    expect(res.status).toBe(400);
    expect(res.json.error.message).toMatch(/customerName/);
    expect(res.json.error.message).toMatch(/items\[0\]\.quantity/);
    expect(res.json.error.message).toMatch(/items\[0\]\.unitPrice/);
    expect((await create({ customerName: 'A', items: [] })).json.error.message).toMatch(/items: expected at least one line item/);
    const huge = await create({ customerName: 'A', items: [{ description: 'x', quantity: '999999999', unitPrice: '9999999999.99' }] });
    expect(huge.status).toBe(400);
    expect(huge.json.error.message).toMatch(/items\[0\]: the line amount .* is larger than 9999999999.99/);
  });

  it('lists with paging and filters by status and customer', async () => {
    for (const name of ['Filter Alpha', 'Filter Beta', 'Filter Alpha 2']) await create({ customerName: name, status: 'sent', items: [{ description: 'x', quantity: 1, unitPrice: '10' }] });
    const page = await call('GET', '/api/invoices?pageSize=2&page=1', undefined, token);
    expect(page.status).toBe(200);
    expect(page.json.items).toHaveLength(2);
    expect(page.json.total).toBeGreaterThanOrEqual(4);
    const filtered = await call('GET', '/api/invoices?status=sent&customer=alpha', undefined, token);
    expect(filtered.json.items.map((i: { customerName: string }) => i.customerName).sort()).toEqual(['Filter Alpha', 'Filter Alpha 2']);
    const bad = await call('GET', '/api/invoices?status=late&pageSize=1000', undefined, token);
    expect(bad.status).toBe(400);
    expect(bad.json.error.message).toMatch(/status/);
    expect(bad.json.error.message).toMatch(/pageSize/);
  });

  it("hides another user's invoice behind 404, for every verb", async () => {
    const mine = await create({ customerName: 'Private', items: [{ description: 'x', quantity: 1, unitPrice: '1' }] });
    const id = mine.json.id;
    expect((await call('GET', `/api/invoices/${id}`, undefined, other)).status).toBe(404);
    expect((await call('PATCH', `/api/invoices/${id}`, { customerName: 'Hijacked' }, other)).status).toBe(404);
    expect((await call('POST', `/api/invoices/${id}/pay`, undefined, other)).status).toBe(404);
    expect((await call('DELETE', `/api/invoices/${id}`, undefined, other)).status).toBe(404);
    expect((await call('GET', `/api/invoices/${id}`, undefined, token)).json.customerName).toBe('Private');
    expect((await call('GET', '/api/invoices/not-a-number', undefined, token)).status).toBe(404);
  });

  it('updates items and recomputes totals, then pays, then refuses changes', async () => {
    const created = await create({ customerName: 'Update Co', items: [{ description: 'a', quantity: 1, unitPrice: '10.00' }] });
    const id = created.json.id;
    const updated = await call('PATCH', `/api/invoices/${id}`, { taxRate: '10', items: [{ description: 'b', quantity: 3, unitPrice: '20.00' }] }, token);
    expect(updated.status).toBe(200);
    expect(updated.json).toMatchObject({ subtotal: '60.00', tax: '6.00', total: '66.00' });
    expect(updated.json.items).toHaveLength(1);
    const paid = await call('POST', `/api/invoices/${id}/pay`, undefined, token);
    expect(paid.json.status).toBe('paid');
    expect(paid.json.paidAt).toBeTruthy();
    expect((await call('POST', `/api/invoices/${id}/pay`, undefined, token)).status).toBe(409);
    expect((await call('PATCH', `/api/invoices/${id}`, { customerName: 'Late change' }, token)).status).toBe(409);
    expect((await call('DELETE', `/api/invoices/${id}`, undefined, token)).status).toBe(409);
  });

  it('deletes a draft with its items', async () => {
    const created = await create({ customerName: 'Gone', items: [{ description: 'a', quantity: 1, unitPrice: '1' }] });
    expect((await call('DELETE', `/api/invoices/${created.json.id}`, undefined, token)).status).toBe(204);
    expect((await call('GET', `/api/invoices/${created.json.id}`, undefined, token)).status).toBe(404);
    const items = await legacy.db('invoice_items').where({ invoice_id: created.json.id });
    expect(items).toHaveLength(0);
  });

  it('requires a token', async () => {
    expect((await call('GET', '/api/invoices')).status).toBe(401);
  });
});

describe('legacy /api/templates', () => {
  it('creates, lists, updates, renders an invoice to escaped HTML, and deletes', async () => {
    const token = await register('tpl@example.test');
    const other = await register('tpl-other@example.test');
    const invoice = await call('POST', '/api/invoices', { customerName: 'Fish & <Chips>', items: [{ description: 'Cod', quantity: 2, unitPrice: '7.25' }] }, token);
    const created = await call('POST', '/api/templates', { name: 'Plain', body: '<h1>{{invoice.number}}</h1><p>{{invoice.customerName}}</p><ul>{{#items}}<li>{{description}} {{amount}}</li>{{/items}}</ul>' }, token);
    expect(created.status).toBe(201);
    expect((await call('GET', '/api/templates', undefined, token)).json.items).toHaveLength(1);
    const renamed = await call('PATCH', `/api/templates/${created.json.id}`, { name: 'Renamed' }, token);
    expect(renamed.json.name).toBe('Renamed');
    const rendered = await call('POST', `/api/templates/${created.json.id}/render`, { invoiceId: invoice.json.id }, token);
    expect(rendered.status).toBe(200);
    expect(rendered.headers.get('content-type')).toMatch(/text\/html/);
    expect(rendered.text).toBe(`<h1>${invoice.json.number}</h1><p>Fish &amp; &lt;Chips&gt;</p><ul><li>Cod 14.50</li></ul>`);
    expect((await call('POST', `/api/templates/${created.json.id}/render`, { invoiceId: invoice.json.id }, other)).status).toBe(404);
    expect((await call('DELETE', `/api/templates/${created.json.id}`, undefined, token)).status).toBe(204);
    expect((await call('GET', `/api/templates/${created.json.id}`, undefined, token)).status).toBe(404);
  });

  it('refuses a template with an unclosed section', async () => {
    const token = await register('tpl-bad@example.test');
    const res = await call('POST', '/api/templates', { name: 'Broken', body: '{{#items}}<li>{{description}}' }, token);
    expect(res.status).toBe(400);
    expect(res.json.error.message).toMatch(/body: a \{\{#section\}\} is never closed/);
  });

  it('stores seeded template bodies out of line (TOAST), as replication must handle', async () => {
    const [{ toast }] = (await legacy.db.raw(`SELECT reltoastrelid::regclass::text AS toast FROM pg_class WHERE oid = 'templates'::regclass`)).rows;
    const [{ chunks }] = (await legacy.db.raw(`SELECT count(*)::int AS chunks FROM ${toast}`)).rows;
    expect(chunks).toBeGreaterThan(0);
  });
});

describe('legacy /api/ocr', () => {
  let token: string;
  const scan = renderTextPng(['Acme Supplies Ltd', 'Invoice No: INV-004217', 'Date: 2026-03-14', 'Total: 1,234.50 EUR']);
  beforeAll(async () => {
    token = await register('ocr@example.test');
  });

  it('reads an uploaded scan offline and finds the invoice number and total', async () => {
    const form = new FormData();
    form.append('file', new Blob([scan], { type: 'image/png' }), 'scan.png');
    const res = await fetch(`${legacy.url}/api/ocr`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: form });
    const json = (await res.json()) as any;
    expect(res.status).toBe(201);
    expect(json.text).toContain('INV-004217');
    expect(json.text).toMatch(/Acme Supplies/);
    expect(json.fields).toEqual({ invoiceNumber: 'INV-004217', total: '1234.50', currency: 'EUR', date: '2026-03-14' });
    expect(json).toMatchObject({ filename: 'scan.png', mimeType: 'image/png', sizeBytes: scan.length });
    const content = await fetch(`${legacy.url}/api/ocr/documents/${json.id}/content`, { headers: { authorization: `Bearer ${token}` } });
    expect(Buffer.from(await content.arrayBuffer()).equals(scan)).toBe(true);
  }, 60_000);

  it('accepts a base64 JSON upload and lists the documents', async () => {
    const res = await call('POST', '/api/ocr', { filename: 'b64.png', contentBase64: scan.toString('base64') }, token);
    expect(res.status).toBe(201);
    expect(res.json.fields.invoiceNumber).toBe('INV-004217');
    const list = await call('GET', '/api/ocr/documents', undefined, token);
    expect(list.json.items.map((d: { filename: string }) => d.filename)).toContain('b64.png');
  }, 60_000);

  it('answers what is not an image, empty or too large with a clear 4xx', async () => {
    const text = await call('POST', '/api/ocr', { filename: 'notes.txt', contentBase64: Buffer.from('hello').toString('base64') }, token);
    expect(text.status).toBe(415);
    expect(text.json.error.message).toMatch(/not an image/);
    const empty = await call('POST', '/api/ocr', { filename: 'empty.png', contentBase64: '' }, token);
    expect(empty.status).toBe(400);
    const big = Buffer.alloc(5 * 1024 * 1024 + 10, 1);
    const form = new FormData();
    form.append('file', new Blob([big]), 'big.png');
    const tooLarge = await fetch(`${legacy.url}/api/ocr`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: form });
    expect(tooLarge.status).toBe(413);
    const plain = await call('POST', '/api/ocr', undefined, token, { 'content-type': 'text/plain' });
    expect(plain.status).toBe(415);
    const broken = await call('POST', '/api/ocr', { contentBase64: Buffer.concat([scan.subarray(0, 40)]).toString('base64') }, token);
    expect(broken.status).toBe(422);
  }, 60_000);
});

describe('legacy /api/analytics and /api/chat', () => {
  it('sums the caller’s invoices by status, month and customer, and the assistant agrees', async () => {
    const token = await register('numbers@example.test');
    const make = async (customerName: string, unitPrice: string, issueDate: string, pay: boolean, status = 'sent') => {
      const res = await call('POST', '/api/invoices', { customerName, issueDate, status, items: [{ description: 'x', quantity: 1, unitPrice }] }, token);
      if (pay) await call('POST', `/api/invoices/${res.json.id}/pay`, undefined, token);
    };
    await make('Big', '300.00', '2026-01-10', true);
    await make('Big', '200.00', '2026-02-10', true);
    await make('Small', '50.25', '2026-02-11', false);
    await make('Small', '9.99', '2026-03-01', false, 'draft');

    const byStatus = await call('GET', '/api/analytics/totals-by-status', undefined, token);
    expect(byStatus.json.items).toEqual([
      { status: 'draft', invoices: 1, total: '9.99' },
      { status: 'paid', invoices: 2, total: '500.00' },
      { status: 'sent', invoices: 1, total: '50.25' },
    ]);
    const byMonth = await call('GET', '/api/analytics/revenue-by-month?year=2026', undefined, token);
    expect(byMonth.json.items).toEqual([{ month: '2026-01', revenue: '300.00', invoices: 1 }, { month: '2026-02', revenue: '200.00', invoices: 1 }]);
    const top = await call('GET', '/api/analytics/top-customers?limit=1', undefined, token);
    expect(top.json.items).toEqual([{ customerName: 'Big', invoices: 2, total: '500.00' }]);
    expect((await call('GET', '/api/analytics/top-customers?limit=0', undefined, token)).status).toBe(400);

    const chat = await call('POST', '/api/chat/messages', { message: 'How much is unpaid?' }, token);
    expect(chat.status).toBe(201);
    expect(chat.json.answer.content).toBe('1 invoice is unpaid: 50.25 EUR.');
    const history = await call('GET', '/api/chat/messages', undefined, token);
    expect(history.json.items.map((m: { role: string }) => m.role)).toEqual(['user', 'assistant']);
    expect((await call('POST', '/api/chat/messages', { message: '' }, token)).status).toBe(400);
    expect((await call('GET', '/api/analytics/totals-by-status')).status).toBe(401);
  });
});
