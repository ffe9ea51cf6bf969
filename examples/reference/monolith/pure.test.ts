import { describe, expect, it } from 'vitest';
import { answerQuestion, HELP_ANSWER, type InvoiceFacts } from './chat-assistant.ts';
import { computeTotals, fitsMoneyColumn, sumMoney } from './invoice-math.ts';
import { extractInvoiceFields, normaliseAmount } from './ocr/invoice-fields.ts';
import { prng } from './seed.ts';
import { renderTemplate, unclosedSections } from './template-render.ts';

describe('computeTotals', () => {
  it.each([
    [[{ quantity: '2', unitPrice: '450.00' }], '19', { amounts: ['900.00'], subtotal: '900.00', tax: '171.00', total: '1071.00' }],
    [[{ quantity: '1.5', unitPrice: '33.33' }], '0', { amounts: ['50.00'], subtotal: '50.00', tax: '0.00', total: '50.00' }],
    [[{ quantity: '0.333', unitPrice: '0.10' }], '0', { amounts: ['0.03'], subtotal: '0.03', tax: '0.00', total: '0.03' }],
    [[{ quantity: '1', unitPrice: '0.05' }], '10', { amounts: ['0.05'], subtotal: '0.05', tax: '0.01', total: '0.06' }],
    [[{ quantity: '1', unitPrice: '-10.00' }, { quantity: '1', unitPrice: '25' }], '0', { amounts: ['-10.00', '25.00'], subtotal: '15.00', tax: '0.00', total: '15.00' }],
    [[{ quantity: '1000', unitPrice: '1234.56' }], '0', { amounts: ['1234560.00'], subtotal: '1234560.00', tax: '0.00', total: '1234560.00' }],
  ])('computes %j at %s%% exactly', (lines, rate, expected) => {
    expect(computeTotals(lines, rate)).toEqual(expected);
  });

  it('says when an amount no longer fits numeric(12,2)', () => {
    expect(fitsMoneyColumn('9999999999.99')).toBe(true);
    expect(fitsMoneyColumn('10000000000.00')).toBe(false);
    expect(fitsMoneyColumn('-10000000000.00')).toBe(false);
  });

  it('sums money without float error', () => {
    expect(sumMoney(['0.10', '0.20'])).toBe('0.30');
  });
});

describe('renderTemplate', () => {
  it('escapes values and repeats sections per item, resolving names against the item first', () => {
    const html = renderTemplate('<b>{{invoice.customerName}}</b>{{#items}}[{{description}}:{{invoice.number}}]{{/items}}{{missing}}', {
      invoice: { customerName: '<script>"x"</script>', number: 'INV-1' },
      items: [{ description: 'a&b' }, { description: 'c' }],
    });
    expect(html).toBe('<b>&lt;script&gt;&quot;x&quot;&lt;/script&gt;</b>[a&amp;b:INV-1][c:INV-1]');
  });

  it('finds sections never closed', () => {
    expect(unclosedSections('{{#items}}x')).toEqual(['items']);
    expect(unclosedSections('{{#items}}x{{/items}}')).toEqual([]);
  });
});

describe('extractInvoiceFields', () => {
  it.each([
    ['Invoice No: INV-004217\nTotal: 1,234.50 EUR\nDate: 2026-03-14', { invoiceNumber: 'INV-004217', total: '1234.50', currency: 'EUR', date: '2026-03-14' }],
    ['INVOICE # 8812\nAmount due 1.234,50 €', { invoiceNumber: '8812', total: '1234.50', currency: 'EUR', date: null }],
    ['Receipt\nTotal $ 99', { invoiceNumber: null, total: '99.00', currency: null, date: null }],
    ['nothing useful here', { invoiceNumber: null, total: null, currency: null, date: null }],
  ])('reads %j', (text, expected) => {
    expect(extractInvoiceFields(text)).toEqual(expected);
  });

  it.each([['1 234.50', '1234.50'], ["1'000", '1000.00'], ['12,5', '125.00'], ['abc', null]])('normalises %s to %s', (raw, out) => {
    expect(normaliseAmount(raw)).toBe(out);
  });
});

describe('answerQuestion', () => {
  const facts: InvoiceFacts = {
    counts: { draft: 1, sent: 2, paid: 3, void: 0 },
    totals: { draft: '5.00', sent: '20.00', paid: '300.00', void: '0.00' },
    overdue: { count: 1, total: '10.00' },
    topCustomer: { name: 'Acme', total: '250.00' },
    currency: 'EUR',
  };
  it.each([
    ['how much is unpaid?', '2 invoices are unpaid: 20.00 EUR.'],
    ['anything overdue?', '1 invoice is overdue, 10.00 EUR in all.'],
    ['what have I been paid', 'You have been paid 300.00 EUR on 3 invoices.'],
    ['who is my best customer', 'Your top customer is Acme, with 250.00 EUR invoiced.'],
    ['how many invoices do I have', 'You have 6 invoices (1 draft, 2 sent, 3 paid, 0 void), 325.00 EUR excluding void.'],
    ['tell me a joke', HELP_ANSWER],
  ])('answers %j', (question, answer) => {
    expect(answerQuestion(question, facts)).toBe(answer);
  });
});

describe('prng', () => {
  it('gives the same sequence for the same seed', () => {
    const a = prng(7);
    const b = prng(7);
    expect([a(), a(), a()]).toEqual([b(), b(), b()]);
    expect(prng(8)()).not.toBe(prng(7)());
  });
});
