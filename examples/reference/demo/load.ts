import { renderTextPng } from '../monolith/ocr/text-image.ts';
import { seedCredentials } from '../monolith/seed.ts';

export interface LoadFigures {
  requests: number;
  errors: number;
  /** 5xx and network errors, by path prefix. */
  errorsByPrefix: Record<string, number>;
  /** Every invoice whose creation was acknowledged (201), for the lost-writes check. */
  invoices: number[];
  ocrUploads: number;
}

/**
 * Simulated frontend users through the gateway: each logs in, then reads and writes at random
 * (list, get, create invoices, analytics, chat, templates, now and then an OCR upload). Every
 * acknowledged write is remembered so the demo can check none was lost.
 */
export function startLoad(gatewayUrl: string, options: { users: number; firstUser?: number }) {
  const figures: LoadFigures = { requests: 0, errors: 0, errorsByPrefix: {}, invoices: [], ocrUploads: 0 };
  let stop = false;
  const scan = renderTextPng(['Demo Supplies Ltd', 'Invoice No: INV-DEMO-7', 'Total: 99.50 EUR']);
  const call = async (method: string, path: string, token?: string, body?: unknown) => {
    figures.requests++;
    try {
      const res = await fetch(`${gatewayUrl}${path}`, {
        method,
        headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(30_000),
      });
      const json = res.headers.get('content-type')?.includes('json') ? await res.json() : await res.text();
      if (res.status >= 500) {
        figures.errors++;
        const prefix = path.split('/').slice(0, 3).join('/');
        figures.errorsByPrefix[prefix] = (figures.errorsByPrefix[prefix] ?? 0) + 1;
      }
      return { status: res.status, json: json as any };
    } catch {
      figures.errors++;
      return { status: 0, json: null };
    }
  };
  const user = async (n: number) => {
    const { email, password } = seedCredentials(n);
    let token: string | undefined;
    let i = 0;
    while (!stop) {
      if (!token || i % 50 === 0) token = (await call('POST', '/api/auth/login', undefined, { email, password })).json?.token;
      i++;
      const r = Math.random();
      if (r < 0.2) await call('GET', '/api/invoices?pageSize=10', token);
      else if (r < 0.3) await call('GET', '/api/ocr/documents', token);
      else if (r < 0.45) {
        const created = await call('POST', '/api/invoices', token, { customerName: `Load ${n}`, items: [{ description: 'Demo work', quantity: 1, unitPrice: '10.00' }] });
        if (created.status === 201) figures.invoices.push(created.json.id);
      } else if (r < 0.55) await call('GET', '/api/analytics/totals-by-status', token);
      else if (r < 0.6) await call('POST', '/api/chat/messages', token, { message: 'how much is unpaid?' });
      else if (r < 0.65) await call('GET', '/api/chat/messages?limit=5', token);
      else if (r < 0.72) await call('GET', '/api/templates', token);
      else if (r < 0.75) await call('POST', '/api/templates/1/render', token, { invoiceId: 1 });
      else if (r < 0.8) await call('GET', '/api/auth/me', token);
      else if (r < 0.81) {
        const res = await call('POST', '/api/ocr', token, { filename: 'scan.png', contentBase64: scan.toString('base64') });
        if (res.status === 201) figures.ocrUploads++;
      } else await call('GET', '/api/invoices?status=sent', token);
      await new Promise((ok) => setTimeout(ok, 20));
    }
  };
  const first = options.firstUser ?? 1;
  const running = Array.from({ length: options.users }, (_, i) => user(first + i));
  return {
    figures,
    async stop() {
      stop = true;
      await Promise.all(running);
    },
  };
}
