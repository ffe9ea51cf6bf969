/** What OCR finds on an invoice scan. */
export interface InvoiceFields {
  invoiceNumber: string | null;
  total: string | null;
  currency: string | null;
  date: string | null;
}

const NUMBER = /\binvoice\s*(?:no\.?|number|#|nr\.?)?\s*[:#]?\s*([A-Z]{0,5}-?\d[\w-]*)/i;
const TOTAL = /\b(?:total|amount\s+due|balance\s+due)\b[^\d\n-]*(-?[\d.,' ]*\d)\s*([A-Z]{3}|[€$£])?/i;
const DATE = /\b(\d{4}-\d{2}-\d{2})\b/;
const SYMBOLS: Record<string, string> = { '€': 'EUR', $: 'USD', '£': 'GBP' };

/** "1,234.50", "1.234,50" and "1 234.50" all read as "1234.50". */
export function normaliseAmount(raw: string): string | null {
  const text = raw.replace(/[\s']/g, '');
  const lastSep = Math.max(text.lastIndexOf('.'), text.lastIndexOf(','));
  const decimals = lastSep >= 0 && text.length - lastSep - 1 === 2 ? text.slice(lastSep + 1) : '';
  const whole = (decimals ? text.slice(0, lastSep) : text).replace(/[.,]/g, '');
  if (!/^-?\d+$/.test(whole)) return null;
  return `${BigInt(whole)}.${decimals || '00'}`;
}

/** Pulls the invoice number, total (with currency) and date out of OCR text. */
export function extractInvoiceFields(text: string): InvoiceFields {
  const number = NUMBER.exec(text)?.[1] ?? null;
  const totalMatch = TOTAL.exec(text);
  const currencyRaw = totalMatch?.[2] ?? null;
  return {
    invoiceNumber: number,
    total: totalMatch ? normaliseAmount(totalMatch[1]) : null,
    currency: currencyRaw ? (SYMBOLS[currencyRaw] ?? currencyRaw.toUpperCase()) : null,
    date: DATE.exec(text)?.[1] ?? null,
  };
}
