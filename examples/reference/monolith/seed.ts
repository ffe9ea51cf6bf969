import type { Knex } from 'knex';
import { hashPassword } from '../services/kit/password.ts';
import { openDatabase } from './db.ts';
import { computeTotals } from './invoice-math.ts';
import { LEGACY_TABLES } from './tables.ts';

export interface SeedOptions {
  users: number;
  invoices: number;
  /** PRNG seed: the same seed on the same starting database gives the same rows. */
  seed?: number;
}

export interface SeedResult {
  users: number;
  invoices: number;
  items: number;
  templates: number;
  firstUser: number;
}

/** mulberry32: small, fast, deterministic. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CUSTOMERS = ['Acme Corp', 'Globex', 'Initech', 'Umbrella', 'Hooli', 'Stark Industries', 'Wayne Enterprises', 'Wonka Industries', 'Tyrell Corp', 'Cyberdyne', 'Soylent', 'Vandelay Industries', 'Pied Piper', 'Dunder Mifflin', 'Prestige Worldwide', 'Monsters Inc', 'Oscorp', 'Aperture Science', 'Black Mesa', 'Gringotts'];
const WORK = ['Consulting', 'Design review', 'Hosting', 'Support plan', 'Licence', 'Training day', 'Audit', 'Migration work', 'Maintenance', 'Workshop'];
const TAGS = ['urgent', 'recurring', 'q1', 'q2', 'q3', 'q4', 'eu', 'us', 'priority', 'net30'];
const STATUSES = [['draft', 0.15], ['sent', 0.35], ['paid', 0.45], ['void', 0.05]] as const;

/** Seeded accounts: `user<N>@example.test` / `password-<N>`. */
export function seedCredentials(n: number): { email: string; password: string } {
  return { email: `user${n}@example.test`, password: `password-${n}` };
}

// Seeded hashes use a low scrypt cost so thousands of users seed in seconds; they verify like
// any other hash because the cost travels inside it. Real registrations use the full cost.
const SEED_COST = { N: 1 << 10, r: 8, p: 1 };

/** A template body over 2 kB: stored out of line (TOAST) like a real one. */
export function bigTemplateBody(rand: () => number, name: string): string {
  const filler = Array.from({ length: 400 }, () => Math.floor(rand() * 0xffffffff).toString(36)).join(' ');
  return `<!doctype html>
<html><head><title>{{invoice.number}}</title><!-- ${name}: ${filler} --></head>
<body>
<h1>Invoice {{invoice.number}}</h1>
<p>To: {{invoice.customerName}} &lt;{{invoice.customerEmail}}&gt;, issued {{invoice.issueDate}}, due {{invoice.dueDate}}</p>
<table>{{#items}}<tr><td>{{position}}</td><td>{{description}}</td><td>{{quantity}}</td><td>{{unitPrice}}</td><td>{{amount}}</td></tr>{{/items}}</table>
<p>Subtotal {{invoice.subtotal}} · Tax {{invoice.tax}} · Total {{invoice.total}} {{invoice.currency}}</p>
</body></html>`;
}

async function insertChunked<T extends object>(trx: Knex.Transaction, table: string, rows: T[], returning?: string): Promise<Array<Record<string, unknown>>> {
  const out: Array<Record<string, unknown>> = [];
  for (let i = 0; i < rows.length; i += 500) {
    const chunk = rows.slice(i, i + 500);
    // RETURNING of one multi-row INSERT comes back in VALUES order.
    if (returning) out.push(...(await trx(table).insert(chunk).returning(returning)));
    else await trx(table).insert(chunk);
  }
  return out;
}

/** Fills the legacy database with users, invoices with items, templates and chat history. */
export async function seedLegacy(databaseUrl: string, options: SeedOptions): Promise<SeedResult> {
  const db = openDatabase(databaseUrl, 2);
  const t = LEGACY_TABLES;
  const rand = prng(options.seed ?? 42);
  const pick = <T>(list: readonly T[]) => list[Math.floor(rand() * list.length)];
  try {
    return await db.transaction(async (trx) => {
      const [{ count }] = await trx(t.users).count<{ count: string }[]>({ count: '*' });
      const first = Number(count) + 1;
      const users = await Promise.all(
        Array.from({ length: options.users }, async (_, i) => {
          const n = first + i;
          const { email, password } = seedCredentials(n);
          return { email, password_hash: await hashPassword(password, SEED_COST), display_name: `User ${n}` };
        }),
      );
      const userIds = (await insertChunked(trx, t.users, users, 'id')).map((r) => r.id as number);
      if (userIds.length === 0) userIds.push(...(await trx(t.users).pluck('id')));

      const invoices: Array<Record<string, unknown>> = [];
      const lines: Array<Array<{ description: string; quantity: string; unitPrice: string }>> = [];
      for (let i = 0; i < options.invoices && userIds.length > 0; i++) {
        const items = Array.from({ length: 1 + Math.floor(rand() * 4) }, () => ({
          description: pick(WORK),
          quantity: String(1 + Math.floor(rand() * 10)),
          unitPrice: `${10 + Math.floor(rand() * 990)}.${String(Math.floor(rand() * 100)).padStart(2, '0')}`,
        }));
        const taxRate = pick(['0', '7', '19', '20']);
        const totals = computeTotals(items, taxRate);
        const r = rand();
        let acc = 0;
        const status = STATUSES.find(([, share]) => (acc += share) > r)?.[0] ?? 'paid';
        const issued = new Date(Date.UTC(2025, Math.floor(rand() * 22), 1 + Math.floor(rand() * 28)));
        const due = new Date(issued.getTime() + 30 * 86_400_000);
        const customer = pick(CUSTOMERS);
        invoices.push({
          user_id: userIds[i % userIds.length],
          number: `SEED-${options.seed ?? 42}-${first}-${i + 1}`,
          customer_name: customer,
          customer_email: `billing@${customer.toLowerCase().replace(/[^a-z]/g, '')}.example`,
          status,
          currency: 'EUR',
          issue_date: issued.toISOString().slice(0, 10),
          due_date: due.toISOString().slice(0, 10),
          subtotal: totals.subtotal,
          tax_rate: taxRate,
          tax: totals.tax,
          total: totals.total,
          tags: [...new Set([pick(TAGS), pick(TAGS)])].slice(0, 1 + Math.floor(rand() * 2)),
          metadata: JSON.stringify({ source: 'seed', po: `PO-${Math.floor(rand() * 100000)}`, terms: { days: 30 } }),
          paid_at: status === 'paid' ? new Date(due.getTime() - 5 * 86_400_000) : null,
        });
        lines.push(items.map((it) => ({ ...it })));
      }
      const invoiceIds = (await insertChunked(trx, t.invoices, invoices, 'id')).map((r) => r.id as number);
      const itemRows = invoiceIds.flatMap((invoiceId, i) => {
        const totals = computeTotals(lines[i], String(invoices[i].tax_rate));
        return lines[i].map((it, j) => ({ invoice_id: invoiceId, position: j + 1, description: it.description, quantity: it.quantity, unit_price: it.unitPrice, amount: totals.amounts[j] }));
      });
      await insertChunked(trx, t.invoiceItems, itemRows);

      const templated = userIds.slice(0, Math.min(userIds.length, 50));
      await insertChunked(trx, t.templates, templated.map((userId, i) => ({ user_id: userId, name: `Standard ${i + 1}`, body: bigTemplateBody(rand, `standard-${i + 1}`), is_default: true })));
      await insertChunked(trx, t.chatMessages, templated.slice(0, 10).flatMap((userId) => [
        { user_id: userId, role: 'user', content: 'how much is unpaid?' },
        { user_id: userId, role: 'assistant', content: 'Ask me again once the migration is done.' },
      ]));
      return { users: userIds.length, invoices: invoiceIds.length, items: itemRows.length, templates: templated.length, firstUser: first };
    });
  } finally {
    await db.destroy();
  }
}
