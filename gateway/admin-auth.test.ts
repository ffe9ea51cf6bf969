import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSecret } from '../core/config/secrets.ts';
import { StranglerError } from '../core/errors.ts';
import { adminHeaders, gatewayTestEnv, testSecrets } from '../test/harness.ts';
import { createAdminAuth } from './admin-auth.ts';
import { startGateway, type RunningGateway } from './start.ts';

describe('the admin token check (pure)', () => {
  const token = generateSecret();
  const isAdmin = createAdminAuth(token);
  const cases: Array<[string, string | undefined, boolean]> = [
    ['the token', `Bearer ${token}`, true],
    ['the token, scheme in lower case', `bearer ${token}`, true],
    ['no header', undefined, false],
    ['another token of the same length', `Bearer ${generateSecret()}`, false],
    ['a prefix of the token', `Bearer ${token.slice(0, -1)}`, false],
    ['the token and more', `Bearer ${token}x`, false],
    ['the token as Basic credentials', `Basic ${token}`, false],
    ['an empty bearer', 'Bearer ', false],
  ];
  it.each(cases)('%s → %s', (_label, header, expected) => {
    expect(isAdmin(header)).toBe(expected);
  });
});

describe("the gateway's admin endpoints", () => {
  let env: Awaited<ReturnType<typeof gatewayTestEnv>>;
  let gw: RunningGateway;
  beforeAll(async () => {
    env = await gatewayTestEnv('admin_auth', ['invoices']);
    gw = await startGateway(env.config, { port: 0, instanceId: 'gw-admin' });
  }, 60_000);
  afterAll(async () => {
    await gw?.stop();
    await env?.cleanup();
  });

  it('answers /metrics only with the admin token: 401 with WWW-Authenticate without it or with another', async () => {
    for (const headers of [{} as Record<string, string>, { authorization: `Bearer ${generateSecret()}` }, { authorization: `Bearer ${testSecrets.legacyJwtSecret}` }]) {
      const res = await fetch(`${gw.url}/metrics`, { headers });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer realm="strangler-admin"');
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe('UNAUTHENTICATED');
      expect(body.error.message).not.toContain('strangler_gateway'); // no metric leaks into the refusal
    }
    const ok = await fetch(`${gw.url}/metrics`, { headers: adminHeaders });
    expect(ok.status).toBe(200);
    expect(await ok.text()).toMatch(/strangler_gateway_route_version \d+/);
  });

  it('leaves /healthz and /readyz open for load balancers', async () => {
    expect((await fetch(`${gw.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${gw.url}/readyz`)).status).toBe(200);
  });

  it('does not start without its secrets, saying which one and how to set it', async () => {
    for (const [missing, config, key] of [
      ['legacy.jwtSecret', { ...env.config, legacy: { ...env.config.legacy, jwtSecret: undefined } }, 'STRANGLER_LEGACY_JWT_SECRET'],
      ['gateway.adminToken', { ...env.config, gateway: { ...env.config.gateway, adminToken: undefined } }, 'STRANGLER_ADMIN_TOKEN'],
    ] as const) {
      const err = await startGateway(config, { port: 0 }).then(
        (g) => g.stop().then(() => null),
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(StranglerError);
      expect((err as StranglerError).code).toBe('CONFIG_INVALID');
      expect((err as StranglerError).message).toMatch(new RegExp(`^${missing} is not set .*${key}=`));
    }
  });
});
