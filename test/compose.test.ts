import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadConfig } from '../core/config/load.ts';
import { COMPOSE_SECRETS_FILE, composeSecrets } from '../cli/commands/compose.ts';
import { looksGenerated, secretLikeStrings } from './secret-scan.ts';

const ROOT = resolve(import.meta.dirname, '..');
const composeText = readFileSync(resolve(ROOT, 'docker-compose.yml'), 'utf8');
const compose = parse(composeText, { merge: true }) as { services: Record<string, any>; networks?: Record<string, any> };
const local = loadConfig(resolve(ROOT, 'strangler.yaml'));
const inCompose = loadConfig(resolve(ROOT, 'strangler.compose.yaml'));

describe('docker-compose.yml agrees with strangler.yaml', () => {
  it('has the same services, prefixes, ports, orders and tables in strangler.compose.yaml', () => {
    const shape = (c: typeof local) =>
      c.services.map((s) => ({ name: s.name, prefix: s.prefix, port: s.port, order: s.order, dependsOn: s.dependsOn, tables: s.tables, db: s.databaseUrl.split('/').pop() }));
    expect(shape(inCompose)).toEqual(shape(local));
    expect(inCompose.gateway.port).toBe(local.gateway.port);
    expect(inCompose.legacy.port).toBe(local.legacy.port);
  });

  it('runs every service with its own postgres:15 started with wal_level=logical', () => {
    for (const s of local.services) {
      const db = compose.services[`${s.name}-db`];
      expect(db, `${s.name}-db`).toBeDefined();
      expect(db.image).toBe('postgres:15');
      expect(db.command.join(' ')).toContain('wal_level=logical');
      expect(db.environment.POSTGRES_DB).toBe(s.databaseUrl.split('/').pop());
      expect(db.healthcheck).toBeDefined();
    }
    expect(compose.services['legacy-db'].command.join(' ')).toContain('wal_level=logical');
  });

  it('checks each service and legacy on the ports of strangler.yaml, with healthchecks and depends_on', () => {
    expect(compose.services.legacy.healthcheck.test.join(' ')).toContain(`:${local.legacy.port}/health`);
    for (const s of local.services) {
      expect(compose.services[s.name].healthcheck.test.join(' ')).toContain(`:${s.port}/health`);
      expect(Object.keys(compose.services[s.name].depends_on)).toContain(`${s.name}-db`);
      expect(compose.services[`sync-${s.name}`].command).toEqual(['sync', 'start', s.name, '--config', '/app/strangler.compose.yaml']);
    }
  });

  it('has Redis, the control schema step, and a forward sync per service plus a reverse sync per writing service', () => {
    expect(compose.services.redis.image).toMatch(/^redis:/);
    expect(compose.services['control-init'].command.slice(0, 2)).toEqual(['control', 'init']);
    expect(compose.services['ocr-worker'].command.slice(0, 2)).toEqual(['ocr', 'worker']);
    for (const s of local.services) {
      expect(compose.services[`sync-${s.name}`].command.slice(0, 3)).toEqual(['sync', 'start', s.name]);
      const writes = !s.readOnly && s.tables.some((t) => !t.replica);
      expect(Boolean(compose.services[`sync-${s.name}-reverse`]), `sync-${s.name}-reverse`).toBe(writes);
    }
  });
});

describe('docker-compose commands', () => {
  it('makes legacy and the services listen on every interface of their container (the gateway reaches them by name)', () => {
    for (const name of ['legacy', ...local.services.map((s) => s.name)]) expect(compose.services[name].environment?.STRANGLER_HOST, name).toBe('0.0.0.0');
  });

  it('runs only commands that exist: strangler\'s, or the reference example\'s through its own entry point', async () => {
    const { commands } = await import('../cli/commands/index.ts');
    const { referenceCommands } = await import('../examples/reference/cli/commands/index.ts');
    const namesOf = (list: Array<{ command?: unknown }>) => new Set(list.map((c) => String(c.command).split(' ')[0]));
    const strangler = namesOf(commands);
    const reference = namesOf(referenceCommands);
    for (const [name, svc] of Object.entries(compose.services as Record<string, { image?: string; command?: string[]; entrypoint?: string[] }>)) {
      if (!svc.command || svc.image?.startsWith('postgres') || svc.image?.startsWith('redis')) continue;
      const example = svc.entrypoint?.join(' ') === 'node examples/reference/bin.js';
      expect((example ? reference : strangler).has(svc.command[0]), `${name}: ${example ? 'reference' : 'strangler'} ${svc.command[0]}`).toBe(true);
    }
  });
});

describe('docker-compose.yml exposes only the gateway and holds no secret', () => {
  const entries = Object.entries(compose.services);

  it('publishes one port, the gateway\'s: legacy, the services, the databases and Redis are unreachable from the host', () => {
    const published = entries.filter(([, svc]) => svc.ports !== undefined).map(([name, svc]) => [name, svc.ports]);
    expect(published).toEqual([['gateway', [`${local.gateway.port}:${local.gateway.port}`]]]);
    for (const [name, svc] of entries) expect(svc.network_mode, `${name}: network_mode would share the host's network`).toBeUndefined();
  });

  it('puts everything but the gateway on the internal network only, which has no route out', () => {
    expect(compose.networks?.internal?.internal).toBe(true);
    for (const [name, svc] of entries) {
      expect(svc.networks, name).toEqual(name === 'gateway' ? ['edge', 'internal'] : ['internal']);
    }
  });

  it('sets no secret in the file: every secret comes from the env file, and no database trusts without a password', () => {
    const secretName = /SECRET|TOKEN|PASSWORD|PASSWD|AUTH|CREDENTIAL|PRIVATE|_KEY$/i;
    for (const [name, svc] of entries) {
      const environment: Record<string, unknown> = Array.isArray(svc.environment) ? Object.fromEntries(svc.environment.map((e: string) => e.split('='))) : (svc.environment ?? {});
      expect(environment.POSTGRES_HOST_AUTH_METHOD, `${name}: a database that trusts every connection needs no password`).toBeUndefined();
      for (const [key, value] of Object.entries(environment)) {
        expect(secretName.test(key), `${name}: ${key} is set in docker-compose.yml; put it in ${COMPOSE_SECRETS_FILE}`).toBe(false);
        expect(String(value), `${name}: ${key} carries a password in a URL`).not.toMatch(/:\/\/[^/@\s]*:[^/@\s]+@/);
      }
      expect(svc.env_file, `${name} reads its secrets from ${COMPOSE_SECRETS_FILE}`).toEqual([COMPOSE_SECRETS_FILE]);
    }
    // Nothing in the file looks like a generated secret, wherever it is written.
    expect([...secretLikeStrings(composeText)].filter(looksGenerated)).toEqual([]);
  });

  it('keeps the env file out of git and out of the image', () => {
    expect(execFileSync('git', ['ls-files', COMPOSE_SECRETS_FILE], { cwd: ROOT, encoding: 'utf8' }).trim(), 'it is tracked').toBe('');
    expect(execFileSync('git', ['check-ignore', COMPOSE_SECRETS_FILE], { cwd: ROOT, encoding: 'utf8' }).trim()).toBe(COMPOSE_SECRETS_FILE);
    expect(readFileSync(resolve(ROOT, '.dockerignore'), 'utf8').split('\n')).toContain(COMPOSE_SECRETS_FILE);
    expect(readFileSync(resolve(ROOT, '.dockerignore'), 'utf8').split('\n')).toContain('.strangler/'); // the dev stack's secrets
  });

  it('gets from `strangler compose secrets` every variable it uses, each new and strong', () => {
    const { names, text } = composeSecrets();
    const used = new Set([...composeText.matchAll(/\$\$\{?([A-Z_]+)/g)].map((m) => m[1]));
    for (const v of used) expect(names, `${v} is used in docker-compose.yml`).toContain(v);
    for (const v of ['STRANGLER_LEGACY_JWT_SECRET', 'STRANGLER_ADMIN_TOKEN', 'POSTGRES_PASSWORD', 'PGPASSWORD', 'REDIS_URL', 'REDISCLI_AUTH']) expect(names).toContain(v);
    const values = Object.fromEntries(text.split('\n').filter((l) => /^[A-Z_]+=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    for (const v of ['STRANGLER_LEGACY_JWT_SECRET', 'STRANGLER_ADMIN_TOKEN', 'POSTGRES_PASSWORD', 'REDIS_PASSWORD']) expect(looksGenerated(values[v]), v).toBe(true);
    expect(values.PGPASSWORD).toBe(values.POSTGRES_PASSWORD);
    expect(values.REDIS_URL).toBe(`redis://:${values.REDIS_PASSWORD}@redis:6379`);
    expect(composeSecrets().text).not.toEqual(text);
  });

  it('ships strangler.compose.yaml with no secret in it', () => {
    expect(inCompose.legacy.jwtSecret).toBeUndefined();
    expect(inCompose.gateway.adminToken).toBeUndefined();
    for (const url of [inCompose.legacy.databaseUrl, inCompose.control.databaseUrl, inCompose.redis.url, ...inCompose.services.map((s) => s.databaseUrl)]) {
      expect(url).not.toMatch(/:\/\/[^/@]*:[^/@]+@/);
    }
  });
});

describe('the image compose builds (Dockerfile)', () => {
  const dockerfile = readFileSync(resolve(ROOT, 'Dockerfile'), 'utf8');
  const stages = dockerfile.split(/^FROM /m).slice(1).map((s) => `FROM ${s}`);

  it('builds in one stage and runs on a current Node LTS slim image as a non-root user, with a HEALTHCHECK', () => {
    expect(stages.length).toBe(2);
    const runtime = stages[1];
    expect(runtime).toMatch(/^FROM node:(22|24|26)-[a-z]+-slim\s*$/m);
    expect(runtime).toMatch(/^USER (?!root)\S+/m);
    expect(runtime).toMatch(/^HEALTHCHECK /m);
    expect(runtime).toContain('/src/dist');
    expect(runtime).not.toMatch(/tsx|npm (ci|install)/);
    expect(stages[0]).toMatch(/npm run build/);
    expect(stages[0]).toMatch(/npm prune --omit=dev/);
  });

  it('copies into the build stage every folder the builds compile (the toolkit and the reference example it runs)', () => {
    const build = JSON.parse(readFileSync(resolve(ROOT, 'tsconfig.build.json'), 'utf8')) as { include: string[] };
    for (const dir of [...build.include, 'examples/reference']) expect(stages[0], dir).toMatch(new RegExp(`^COPY ${dir} \\./${dir}$`, 'm'));
    expect(stages[0]).toContain('tsc -p examples/reference/tsconfig.build.json');
    // The compose file runs the reference services through the example's entry point.
    expect(stages[1]).toContain('examples/reference/bin.js');
  });
});
