import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResolvedConfig } from '../core/config/load.ts';
import { adminHeaders, gatewayTestEnv, uniqueName } from '../test/harness.ts';
import { accountFrom, accountKey, credentialPaths } from './credential-limit.ts';
import { startGateway, type RunningGateway } from './start.ts';

describe('the account a credential attempt names (pure)', () => {
  const fields = ['email', 'username'];
  const cases: Array<[string, string | undefined, string, string | null]> = [
    ['a JSON email', 'application/json', '{"email":"Ada@Example.test","password":"x"}', 'ada@example.test'],
    ['a JSON user name when there is no email', 'application/json; charset=utf-8', '{"username":" bob ","password":"x"}', 'bob'],
    ['the first listed field that is present', 'application/json', '{"username":"bob","email":"carol@example.test"}', 'carol@example.test'],
    ['a form body', 'application/x-www-form-urlencoded', 'email=dan%40example.test&password=x', 'dan@example.test'],
    ['JSON sent without a content type', undefined, '{"email":"eve@example.test"}', 'eve@example.test'],
    ['no account field', 'application/json', '{"password":"x"}', null],
    ['an empty account', 'application/json', '{"email":"  "}', null],
    ['an account that is not a string', 'application/json', '{"email":["a@b.c"]}', null],
    ['a JSON array', 'application/json', '[{"email":"a@b.c"}]', null],
    ['malformed JSON', 'application/json', '{"email":', null],
  ];
  it.each(cases)('reads %s', (_name, contentType, body, expected) => {
    expect(accountFrom(Buffer.from(body), contentType, fields)).toBe(expected);
  });

  it('reads only the body\'s own fields, never inherited ones', () => {
    expect(accountFrom(Buffer.from('{"password":"x"}'), 'application/json', ['toString', 'constructor'])).toBeNull();
  });

  it('never keeps the account itself as a key', () => {
    expect(accountKey('ada@example.test')).toMatch(/^acct:[0-9a-f]{32}$/);
    expect(accountKey('ada@example.test')).toBe(accountKey('ada@example.test'));
  });

  it('takes the public paths as credential endpoints unless paths are listed', () => {
    expect(credentialPaths({}, ['/api/auth/login/', '/API/Auth/Register'])).toEqual(['/api/auth/login', '/api/auth/register']);
    expect(credentialPaths({ paths: ['/login'] }, ['/api/auth/login'])).toEqual(['/login']);
  });
});

/**
 * Issue 19: 400 wrong-password logins in a row from one address got no 429. The shipped
 * strangler.yaml limits its credential endpoints (login, register) per client address and per
 * account. Each test runs its own gateway with a fresh Redis key prefix: counts start at zero.
 */
describe('credential limits at the gateway', () => {
  let env: Awaited<ReturnType<typeof gatewayTestEnv>>;
  const running: RunningGateway[] = [];

  beforeAll(async () => {
    env = await gatewayTestEnv('credential_limits', ['auth']);
    // The monolith's login, as far as the gateway can tell: 200 for the right password, 401 else.
    env.legacy.override.set('/api/auth/login', (_req, body) => {
      const json = (() => {
        try {
          return JSON.parse(body || '{}') as { password?: string };
        } catch {
          return {};
        }
      })();
      const ok = json.password === 'right' || new URLSearchParams(body).get('password') === 'right';
      return ok ? { status: 200, body: { token: 't' } } : { status: 401, body: { error: { code: 'UNAUTHENTICATED', message: 'wrong email or password' } } };
    });
  });

  afterAll(async () => {
    for (const g of running) await g.stop();
    await env?.cleanup();
  });

  /**
   * The shipped limits (20 per address, 10 per account) over a day-long window: a fixed window
   * that ended during the test would start the counts over.
   */
  async function gateway(credentialLimits: Partial<ResolvedConfig['gateway']['credentialLimits']> = {}): Promise<RunningGateway> {
    const shipped: Partial<ResolvedConfig['gateway']['credentialLimits']> = env.config.gateway.credentialLimits ?? {};
    const day = (rule: typeof shipped.perAddress) => (rule ? { ...rule, windowMs: 86_400_000 } : rule);
    const config: ResolvedConfig = {
      ...env.config,
      redis: { ...env.config.redis, keyPrefix: `${uniqueName('cl')}:` },
      gateway: { ...env.config.gateway, credentialLimits: { ...shipped, perAddress: day(shipped.perAddress), perAccount: day(shipped.perAccount), ...credentialLimits } as ResolvedConfig['gateway']['credentialLimits'] },
    };
    const g = await startGateway(config, { port: 0 });
    running.push(g);
    return g;
  }

  const login = async (g: RunningGateway, email: string, password: string) => {
    const res = await fetch(`${g.url}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, password }) });
    return { status: res.status, retryAfter: res.headers.get('retry-after'), body: (await res.json()) as { error?: { code: string; message: string } } };
  };

  it('answers 429 with Retry-After to 400 wrong-password logins in a row for one account from one address, after the first 10', async () => {
    const g = await gateway();
    const seenBefore = env.legacy.seen.length;
    const answers = [];
    for (let i = 0; i < 400; i++) answers.push(await login(g, 'victim@example.test', `guess-${i}`));
    expect(answers.slice(0, 10).map((a) => a.status)).toEqual(Array(10).fill(401));
    expect(answers.slice(10).every((a) => a.status === 429)).toBe(true);
    expect(Number(answers[399].retryAfter)).toBeGreaterThanOrEqual(1);
    expect(answers[399].body.error).toMatchObject({ code: 'RATE_LIMITED', message: expect.stringMatching(/too many failed attempts/) });
    // The monolith saw only what was let through.
    expect(env.legacy.seen.length - seenBefore).toBeLessThanOrEqual(20);
    expect(await (await fetch(`${g.url}/metrics`, { headers: adminHeaders })).text()).toMatch(/strangler_gateway_credential_limited_total\{path="\/api\/auth\/login",limit="(account|address)"\} [1-9]/);
  });

  it('answers 429 to 400 wrong-password logins from one address for 400 different accounts (credential stuffing), after the first 20', async () => {
    const g = await gateway();
    const statuses: number[] = [];
    for (let i = 0; i < 400; i++) statuses.push((await login(g, `user${i}@example.test`, 'wrong')).status);
    expect(statuses.slice(0, 20)).toEqual(Array(20).fill(401));
    expect(statuses.slice(20).every((s) => s === 429)).toBe(true);
  });

  it('gives successful logins back: 100 users behind one address who log in are never limited', async () => {
    const g = await gateway();
    const statuses: number[] = [];
    for (let i = 0; i < 100; i++) statuses.push((await login(g, `user${i % 5}@example.test`, 'right')).status);
    expect(statuses.every((s) => s === 200)).toBe(true);
  });

  it('counts an account named in a form body like one named in JSON', async () => {
    const g = await gateway({ perAddress: false });
    for (let i = 0; i < 5; i++) expect((await login(g, 'Form@Example.test', 'wrong')).status).toBe(401);
    const form = async () => (await fetch(`${g.url}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'email=form%40example.test&password=wrong' })).status;
    for (let i = 0; i < 5; i++) expect(await form()).toBe(401);
    expect(await form()).toBe(429);
    expect((await login(g, 'someone-else@example.test', 'wrong')).status).toBe(401);
  });

  it('limits nothing when switched off in strangler.yaml (credentialLimits.enabled: false)', async () => {
    const g = await gateway({ enabled: false });
    const statuses: number[] = [];
    for (let i = 0; i < 40; i++) statuses.push((await login(g, 'victim@example.test', 'wrong')).status);
    expect(statuses.every((s) => s === 401)).toBe(true);
  });
});
