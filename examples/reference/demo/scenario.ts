import type { Topology } from '../../../cli/dev/topology.ts';

/**
 * What the demo does once the stack runs: a few requests through the gateway (all still served
 * by the monolith), then the whole migration (demo/migration.ts).
 */
export async function runScenario(topology: Topology, say: (line: string) => void): Promise<boolean> {
  const gateway = topology.components.find((c) => c.name === 'gateway')!.url;
  say('\nwhere each part listens:');
  for (const [name, url] of Object.entries(topology.where())) say(`  ${name.padEnd(10)} ${url}`);

  say('\na few requests through the gateway (every prefix still served by the monolith):');
  const call = async (method: string, path: string, body?: unknown, token?: string) => {
    const res = await fetch(`${gateway}${path}`, {
      method,
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    say(`  ${method.padEnd(5)} ${path.padEnd(34)} ${res.status}  ${text.length > 90 ? `${text.slice(0, 90)}…` : text}`);
    return { status: res.status, json: text ? JSON.parse(text) : undefined };
  };
  await call('GET', '/health');
  const login = await call('POST', '/api/auth/login', { email: 'user1@example.test', password: 'password-1' });
  const token = login.json?.token as string | undefined;
  if (!token) return false;
  await call('GET', '/api/auth/me', undefined, token);
  await call('GET', '/api/invoices?pageSize=2', undefined, token);
  const created = await call('POST', '/api/invoices', {
    customerName: 'Demo Customer',
    items: [{ description: 'Migration consulting', quantity: 2, unitPrice: '450.00' }],
  }, token);
  await call('GET', '/api/analytics/totals-by-status', undefined, token);
  await call('GET', '/api/invoices', undefined, undefined);
  if (created.status !== 201) return false;
  const { runMigration } = await import('./migration.ts');
  return runMigration(topology, say);
}
