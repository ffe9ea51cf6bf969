import { sumMoney } from './invoice-math.ts';

/** What the assistant knows about one user's invoices. */
export interface InvoiceFacts {
  counts: Record<'draft' | 'sent' | 'paid' | 'void', number>;
  totals: Record<'draft' | 'sent' | 'paid' | 'void', string>;
  overdue: { count: number; total: string };
  topCustomer: { name: string; total: string } | null;
  currency: string;
}

interface Rule {
  matches: RegExp;
  answer: (f: InvoiceFacts) => string;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

// Order matters: the first rule that matches answers ("overdue" before "unpaid").
const RULES: Rule[] = [
  { matches: /overdue|late|past due/i, answer: (f) => (f.overdue.count ? `${plural(f.overdue.count, 'invoice')} ${f.overdue.count === 1 ? 'is' : 'are'} overdue, ${f.overdue.total} ${f.currency} in all.` : 'No invoice is overdue.') },
  { matches: /unpaid|owe|outstanding|open/i, answer: (f) => `${plural(f.counts.sent, 'invoice')} ${f.counts.sent === 1 ? 'is' : 'are'} unpaid: ${f.totals.sent} ${f.currency}.` },
  { matches: /\bpaid|revenue|earn|income/i, answer: (f) => `You have been paid ${f.totals.paid} ${f.currency} on ${plural(f.counts.paid, 'invoice')}.` },
  { matches: /draft/i, answer: (f) => `You have ${plural(f.counts.draft, 'draft')} worth ${f.totals.draft} ${f.currency}.` },
  { matches: /(best|top|biggest|largest).*(customer|client)|(customer|client).*(best|top|most)/i, answer: (f) => (f.topCustomer ? `Your top customer is ${f.topCustomer.name}, with ${f.topCustomer.total} ${f.currency} invoiced.` : 'You have no customers yet.') },
  {
    matches: /how many|count|number of|total/i,
    answer: (f) => {
      const all = f.counts.draft + f.counts.sent + f.counts.paid + f.counts.void;
      return `You have ${plural(all, 'invoice')} (${f.counts.draft} draft, ${f.counts.sent} sent, ${f.counts.paid} paid, ${f.counts.void} void), ${sumMoney([f.totals.draft, f.totals.sent, f.totals.paid])} ${f.currency} excluding void.`;
    },
  },
];

export const HELP_ANSWER = 'I can tell you what is unpaid, what is overdue, what you have been paid, your drafts, your top customer and how many invoices you have.';

/** A rule-based answer about the user's invoices: pure, so every deployment answers alike. */
export function answerQuestion(question: string, facts: InvoiceFacts): string {
  return RULES.find((r) => r.matches.test(question))?.answer(facts) ?? HELP_ANSWER;
}
