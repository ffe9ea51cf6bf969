/**
 * Money arithmetic for invoices, in integers (cents and thousandths), never floats. Amounts are
 * decimal strings with two places, as Postgres numeric(12,2) returns them.
 */

export const MONEY = /^-?\d{1,10}(\.\d{1,2})?$/;
export const QUANTITY = /^\d{1,9}(\.\d{1,3})?$/;
export const PERCENT = /^\d{1,3}(\.\d{1,2})?$/;

function toUnits(text: string, places: number): bigint {
  const negative = text.startsWith('-');
  const [whole, frac = ''] = text.replace('-', '').split('.');
  const units = BigInt(whole) * 10n ** BigInt(places) + BigInt((frac + '0'.repeat(places)).slice(0, places) || '0');
  return negative ? -units : units;
}

/** Divides and rounds half away from zero. */
function divRound(n: bigint, d: bigint): bigint {
  const q = n / d;
  const r = n % d;
  if (2n * (r < 0n ? -r : r) >= d) return q + (n < 0n ? -1n : 1n);
  return q;
}

export function formatCents(cents: bigint): string {
  const negative = cents < 0n;
  const abs = negative ? -cents : cents;
  const text = `${abs / 100n}.${String(abs % 100n).padStart(2, '0')}`;
  return negative ? `-${text}` : text;
}

export interface LineInput {
  quantity: string;
  unitPrice: string;
}

export interface Totals {
  amounts: string[];
  subtotal: string;
  tax: string;
  total: string;
}

/** Line amounts (quantity × unit price, rounded to the cent), subtotal, tax at `taxRate` %, total. */
export function computeTotals(lines: LineInput[], taxRate: string): Totals {
  const amounts = lines.map((l) => divRound(toUnits(l.quantity, 3) * toUnits(l.unitPrice, 2), 1000n));
  const subtotal = amounts.reduce((a, b) => a + b, 0n);
  const tax = divRound(subtotal * toUnits(taxRate, 2), 10000n);
  return { amounts: amounts.map(formatCents), subtotal: formatCents(subtotal), tax: formatCents(tax), total: formatCents(subtotal + tax) };
}

/** Sums decimal strings exactly. */
export function sumMoney(values: string[]): string {
  return formatCents(values.reduce((a, v) => a + toUnits(v, 2), 0n));
}

/** Whether an amount fits the money columns, numeric(12,2): at most 10 digits before the point. */
export function fitsMoneyColumn(amount: string): boolean {
  return /^-?\d{1,10}\.\d{2}$/.test(amount);
}
