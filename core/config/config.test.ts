import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { StranglerError } from '../errors.ts';
import { loadConfig, resolveConfig, serviceForPrefix, configJsonSchema } from './load.ts';

const root = resolve(import.meta.dirname, '../..');
const base = () => parse(readFileSync(resolve(root, 'strangler.yaml'), 'utf8'));

function errorOf(raw: unknown): StranglerError {
  try {
    resolveConfig(raw);
  } catch (err) {
    return err as StranglerError;
  }
  throw new Error('expected the config to be refused');
}

describe('strangler.yaml validation', () => {
  it('accepts the shipped strangler.yaml and orders services by `order`', () => {
    const config = loadConfig(resolve(root, 'strangler.yaml'));
    expect(config.services.map((s) => s.name)).toEqual(['auth', 'invoices', 'templates', 'ocr', 'analytics', 'chat']);
    expect(config.services[1].databaseUrl).toBe('postgres://postgres@127.0.0.1:5432/svc_invoices');
    expect(config.services[1].url).toBe('http://127.0.0.1:5003');
  });

  it('applies defaults that fit the local stack when the file is empty', () => {
    const config = resolveConfig({});
    expect(config.gateway.port).toBe(5000);
    expect(config.legacy.url).toBe('http://127.0.0.1:5001');
    expect(config.control.databaseUrl).toBe('postgres://postgres@127.0.0.1:5432/strangler_control');
  });

  it('lets overrides (flags, environment) win over the file', () => {
    const config = resolveConfig(base(), { postgresUrl: 'postgres://u@db:6543', redisUrl: 'redis://r:1' });
    expect(config.legacy.databaseUrl).toBe('postgres://u@db:6543/legacy');
    expect(config.redis.url).toBe('redis://r:1');
    const zoned = { ...base(), gateway: { ...base().gateway, zone: 'file-zone' } };
    expect(resolveConfig(zoned).gateway.zone).toBe('file-zone');
    expect(resolveConfig(zoned, { gatewayZone: 'eu-1' }).gateway.zone).toBe('eu-1');
  });

  const cases: Array<[string, (raw: any) => void, string]> = [
    ['an unknown top-level key, with a suggestion', (r) => (r.gatway = {}), 'gatway: unknown key; did you mean "gateway"?'],
    ['an unknown key inside a service', (r) => (r.services[0].prefx = '/x'), 'services[0].prefx: unknown key; did you mean "prefix"?'],
    ['a port of the wrong type', (r) => (r.legacy.port = 'abc'), 'legacy.port: expected a number, got "abc"'],
    ['a port out of range', (r) => (r.services[2].port = 70000), 'services[2].port: expected a value <= 65535'],
    ['a missing required key', (r) => delete r.services[1].database, 'services[1].database: required'],
    ['a prefix with a trailing slash', (r) => (r.services[0].prefix = '/api/auth/'), 'services[0].prefix: expected a lowercase path prefix'],
    ['a bad table name', (r) => (r.services[1].tables[0].source = 'Invoices;drop'), 'services[1].tables[0].source: expected a lowercase SQL identifier'],
    ['a bad log level', (r) => (r.logLevel = 'loud'), 'logLevel: expected one of'],
    ['an unknown data plane engine', (r) => (r.gateway.engine = 'nginx'), 'gateway.engine: expected one of "node", "haproxy"'],
    ['a duplicate prefix', (r) => (r.services[1].prefix = '/api/auth'), 'services[1].prefix: "/api/auth" is already used by services[0]'],
    ['a port clash with the gateway', (r) => (r.services[0].port = 5000), 'services[0].port: 5000 is already used by gateway.port'],
    ['an unknown dependency', (r) => (r.services[1].dependsOn = ['billing']), 'services[1].dependsOn[0]: unknown service "billing"'],
    ['a dependency cycle', (r) => (r.services[0].dependsOn = ['invoices']), 'dependsOn has a cycle: auth -> invoices -> auth'],
    ['a table owned twice', (r) => r.services[2].tables.push({ source: 'users' }), 'legacy table "users" is already owned by service "auth"'],
    ['a short JWT secret', (r) => (r.legacy.jwtSecret = 'short'), 'legacy.jwtSecret: the secret is too short: 5 base64 characters hold at most 30 bits'],
    ['the JWT secret the toolkit once shipped as its default', (r) => (r.legacy.jwtSecret = 'dev-only-legacy-secret-change-me'), 'legacy.jwtSecret: the secret is too short'],
    ['a long JWT secret that is a phrase', (r) => (r.legacy.jwtSecret = 'this-is-a-very-long-secret-for-production-use-only-please'), 'legacy.jwtSecret: the secret is not random enough'],
    ['the admin token the toolkit once shipped as its default', (r) => (r.gateway.adminToken = 'dev-only-admin-token-change-me'), 'gateway.adminToken: the secret is too short'],
  ];

  it.each(cases)('refuses %s, naming the key', (_label, mutate, expected) => {
    const raw = base();
    mutate(raw);
    const err = errorOf(raw);
    expect(err).toBeInstanceOf(StranglerError);
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain(expected);
  });

  it('refuses an issuer whose algorithms do not fit its key (algorithm confusion) or that has no key or two', () => {
    const issuers = (list: unknown[]) => ({ ...base(), gateway: { ...base().gateway, auth: { issuers: list } } });
    expect(errorOf(issuers([{ name: 'a', algorithms: ['RS256'], secretFile: '/run/secrets/a' }])).message).toMatch(/gateway\.auth\.issuers\[0\]\.algorithms: a secretFile issuer takes HS256\/HS384\/HS512 only, not RS256/);
    expect(errorOf(issuers([{ name: 'b', algorithms: ['HS256'], jwksUrl: 'https://id.example/jwks' }])).message).toMatch(/HS256 need a secretFile/);
    expect(errorOf(issuers([{ name: 'c', algorithms: ['ES256'] }])).message).toMatch(/give exactly one of jwksUrl, publicKeyFile \(PEM\) or secretFile/);
    expect(errorOf(issuers([{ name: 'd', algorithms: ['none'], jwksUrl: 'https://id.example/jwks' }])).message).toMatch(/algorithms/);
    expect(resolveConfig({ ...base(), legacy: { ...base().legacy, jwtIssuer: null } }).legacy.jwtIssuer).toBeNull();
  });

  it('takes the HTTP limits of the gateway with their defaults, and refuses a request deadline shorter than the head deadline', () => {
    expect(resolveConfig({}).gateway).toMatchObject({ maxHeaderBytes: 16_384, headersTimeoutMs: 20_000, requestTimeoutMs: 300_000, keepAliveTimeoutMs: 65_000, bodyLimitBytes: 10 * 1024 * 1024 });
    expect(resolveConfig({ gateway: { requestTimeoutMs: 0 } }).gateway.requestTimeoutMs).toBe(0);
    expect(errorOf({ gateway: { headersTimeoutMs: 30_000, requestTimeoutMs: 10_000 } }).message).toMatch(/gateway\.requestTimeoutMs \(10000\) must be 0 \(none\) or at least gateway\.headersTimeoutMs \(30000\)/);
  });

  it('says which file is missing and what to do', () => {
    expect(() => loadConfig('/nonexistent/strangler.yaml')).toThrow(/not found; create it or pass --config/);
  });

  it('names the line of a YAML syntax error', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    const file = join(dir, 'strangler.yaml');
    writeFileSync(file, 'gateway:\n  port: 5000\n bad: [\n');
    expect(() => loadConfig(file)).toThrow(/not valid YAML at line \d+/);
  });

  it('names the known prefixes when asked for an unknown one', () => {
    const config = resolveConfig(base());
    expect(() => serviceForPrefix(config, '/api/billing')).toThrow(/unknown prefix "\/api\/billing"; known prefixes: \/api\/auth, \/api\/invoices/);
    expect(serviceForPrefix(config, '/api/invoices/').name).toBe('invoices');
  });

  it('publishes a JSON Schema that knows every top-level key', () => {
    const schema = configJsonSchema() as { properties: Record<string, unknown> };
    expect(Object.keys(schema.properties)).toEqual(
      expect.arrayContaining(['postgres', 'redis', 'legacy', 'control', 'gateway', 'sync', 'services']),
    );
  });
});

describe('strangler.schema.json', () => {
  it('is the schema the code validates with (regenerate with: npm run schema)', () => {
    const committed = JSON.parse(readFileSync(resolve(root, 'strangler.schema.json'), 'utf8'));
    expect(committed).toEqual(configJsonSchema());
  });
});
