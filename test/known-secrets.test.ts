import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { secretOverrides } from '../cli/context.ts';
import { loadConfig, type ResolvedConfig } from '../core/config/load.ts';
import { generateSecret } from '../core/config/secrets.ts';
import { StranglerError } from '../core/errors.ts';
import { silentLogger } from '../core/logger.ts';
import { startGateway, type RunningGateway } from '../gateway/start.ts';
import { startLegacyApp } from '../examples/reference/monolith/index.ts';
import { migrateControl } from '../migrations/control/index.ts';
import { startService, type RunningService } from '../examples/reference/services/app.ts';
import { createTestDatabase, dropTestDatabase, ROOT, sharedStack, uniqueName } from './harness.ts';
import { repositorySecrets } from './secret-scan.ts';
import { startEchoUpstream, type EchoUpstream } from './upstream.ts';

/**
 * Issue 26: a deployment from the repository's configs cannot run with a secret anyone else
 * knows. Every string the repository holds (code, YAML, docs) is tried as the HS256 secret of a
 * token against a gateway and a service started from the shipped strangler.yaml; all are refused.
 */

/** What a `docker compose up` hands the gateway: docker-compose.yml's environment (secrets.env is not committed). */
function composeEnvironment(): NodeJS.ProcessEnv {
  const compose = parse(readFileSync(resolve(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as { services: Record<string, { environment?: Record<string, string> }> };
  return { ...compose.services.gateway.environment };
}

/** The shipped configs as a deployment resolves them, pointed at the test stack's Postgres and Redis. */
function shippedConfigs(): Array<[string, ResolvedConfig]> {
  const { pgBaseUrl, redisUrl } = sharedStack();
  const at = { postgresUrl: pgBaseUrl, redisUrl, logLevel: 'silent' as const };
  return [
    ['strangler.yaml', loadConfig(resolve(ROOT, 'strangler.yaml'), { ...secretOverrides({}, {}), ...at })],
    ['strangler.compose.yaml with docker-compose.yml', loadConfig(resolve(ROOT, 'strangler.compose.yaml'), { ...secretOverrides({}, composeEnvironment()), ...at })],
  ];
}

describe('the shipped configs carry no secret', () => {
  it.each(shippedConfigs())('%s: the gateway, a service and the monolith refuse to start until a secret is given', async (_label, config) => {
    const dir = mkdtempSync(join(tmpdir(), 'known-secrets-'));
    const starts: Array<[string, () => Promise<{ close?: () => Promise<void>; stop?: () => Promise<void> }>]> = [
      ['gateway', () => startGateway({ ...config, gateway: { ...config.gateway, snapshotFile: join(dir, 'routes.json') } }, { port: 0, logger: silentLogger })],
      ['service', () => startService(config, 'invoices', { port: 0, logger: silentLogger, instance: false })],
      ['monolith', () => startLegacyApp(config, { port: 0, logger: silentLogger })],
    ];
    for (const [what, start] of starts) {
      const outcome = await start().then(
        async (running) => {
          await (running.stop ?? running.close)?.();
          return null;
        },
        (err: unknown) => err,
      );
      expect(outcome, `the ${what} started`).toBeInstanceOf(StranglerError);
      expect((outcome as StranglerError).message, what).toMatch(/^legacy\.jwtSecret is not set and /);
    }
    // Given the JWT secret, the gateway still wants its admin token.
    const withJwt = { ...config, legacy: { ...config.legacy, jwtSecret: generateSecret() }, gateway: { ...config.gateway, snapshotFile: join(dir, 'routes.json') } };
    const outcome = await startGateway(withJwt, { port: 0, logger: silentLogger }).then(
      async (g) => {
        await g.stop();
        return null;
      },
      (err: unknown) => err,
    );
    expect((outcome as StranglerError | null)?.message).toMatch(/^gateway\.adminToken is not set and /);
  });
});

describe('a secret found in the repository is never accepted', () => {
  let secret: string;
  let adminToken: string;
  let config: ResolvedConfig;
  let legacy: EchoUpstream;
  let gateway: RunningGateway;
  let service: RunningService;
  const databases: string[] = [];

  beforeAll(async () => {
    const { pgBaseUrl, redisUrl } = sharedStack();
    const shipped = loadConfig(resolve(ROOT, 'strangler.yaml'), { postgresUrl: pgBaseUrl, redisUrl, logLevel: 'silent' });
    // A secret strangler.yaml (or a default) carried would be used, as a deployment would;
    // only what it lacks is generated here, as an operator would.
    secret = shipped.legacy.jwtSecret ?? generateSecret();
    const control = await createTestDatabase('known_secrets_control');
    const invoices = await createTestDatabase('known_secrets_invoices');
    databases.push(control, invoices);
    await migrateControl(control, shipped.control.schema);
    legacy = await startEchoUpstream('legacy');
    config = {
      ...shipped,
      redis: { ...shipped.redis, keyPrefix: `${uniqueName('known_secrets')}:` },
      legacy: { ...shipped.legacy, jwtSecret: secret, url: legacy.url },
      control: { ...shipped.control, databaseUrl: control },
      gateway: { ...shipped.gateway, adminToken: (adminToken = shipped.gateway.adminToken ?? generateSecret()), snapshotFile: join(mkdtempSync(join(tmpdir(), 'known-secrets-')), 'routes.json') },
      services: shipped.services.map((s) => (s.name === 'invoices' ? { ...s, databaseUrl: invoices } : s)),
    };
    gateway = await startGateway(config, { port: 0, logger: silentLogger });
    service = await startService(config, 'invoices', { port: 0, logger: silentLogger, instance: false });
  }, 60_000);

  afterAll(async () => {
    await service?.close();
    await gateway?.stop();
    await legacy?.close();
    for (const db of databases) await dropTestDatabase(db).catch(() => undefined);
  });

  const tokenSignedWith = (key: string) =>
    new SignJWT({ email: 'mallory@example.test' }).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).setSubject('1').setIssuer(config.legacy.jwtIssuer!).setIssuedAt().setExpirationTime('1h').sign(new TextEncoder().encode(key));
  const statusOf = async (url: string, token: string, path = '/api/invoices/1') => (await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${token}` } })).status;

  it('accepts a token signed with the secret it was given (so a refusal below means something)', async () => {
    const token = await tokenSignedWith(secret);
    expect(await statusOf(gateway.url, token)).toBe(200); // the echo legacy behind it
    expect(await statusOf(service.url, token)).not.toBe(401);
    expect(await statusOf(gateway.url, adminToken, '/metrics')).toBe(200);
  });

  it('refuses at the gateway and at the service a token signed with each secret-like string of the repository, and each as the admin token (401)', async () => {
    const candidates = [...repositorySecrets(ROOT)];
    // The scan reads code, YAML and docs: the old defaults are still named in tests.
    expect(candidates.length).toBeGreaterThan(1_000);
    expect(candidates).toContain('dev-only-legacy-secret-change-me');
    const accepted: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < candidates.length) {
        const candidate = candidates[next++];
        const token = await tokenSignedWith(candidate);
        // The admin token travels in a header: only what a header can carry can be one.
        const headerSafe = /^[\x21-\x7e]+$/.test(candidate);
        const [atGateway, atService, asAdmin] = await Promise.all([statusOf(gateway.url, token), statusOf(service.url, token), headerSafe ? statusOf(gateway.url, candidate, '/metrics') : 401]);
        if (atGateway !== 401 || atService !== 401 || asAdmin !== 401) accepted.push(`${JSON.stringify(candidate)}: gateway ${atGateway}, service ${atService}, /metrics ${asAdmin}`);
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    expect(accepted).toEqual([]);
  }, 240_000);
});
