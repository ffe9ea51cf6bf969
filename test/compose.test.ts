import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadConfig } from '../core/config/load.ts';

const ROOT = resolve(import.meta.dirname, '..');
const compose = parse(readFileSync(resolve(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as { services: Record<string, any> };
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

  it('publishes each service, the gateway and legacy on the ports of strangler.yaml, with healthchecks and depends_on', () => {
    const published = (name: string) => compose.services[name].ports.map((p: string) => Number(p.split(':')[0]));
    expect(published('gateway')).toEqual([local.gateway.port]);
    expect(published('legacy')).toEqual([local.legacy.port]);
    for (const s of local.services) {
      expect(published(s.name)).toEqual([s.port]);
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

  it('runs only strangler commands that exist', async () => {
    const { commands } = await import('../cli/commands/index.ts');
    const names = new Set(commands.map((c) => String(c.command).split(' ')[0]));
    for (const [name, svc] of Object.entries(compose.services as Record<string, { image?: string; command?: string[] }>)) {
      if (!svc.command || svc.image?.startsWith('postgres') || svc.image?.startsWith('redis')) continue;
      expect(names.has(svc.command[0]), `${name}: strangler ${svc.command[0]}`).toBe(true);
    }
  });
});
