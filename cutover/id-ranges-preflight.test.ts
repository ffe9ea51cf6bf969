import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveConfig, type ResolvedConfig } from '../core/config/load.ts';
import { createTestDatabase, dropTestDatabase } from '../test/harness.ts';
import { runChecks, type ProbeContext } from './probes.ts';
import { plan as planCommand, type Phase } from './state-machine.ts';

/**
 * The canary preflight's id check (issue 20, item 3): before the service takes writes, the same
 * check as `sync start` and `doctor`. A foreign monolith (accounts, notes) and a service database
 * its team made by plain SQL with `serial` keys, which hand out 1, 2, 3… as the monolith does.
 */
let legacyUrl: string;
let serviceUrl: string;
let config: ResolvedConfig;

async function sql(url: string, text: string): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await c.query(text);
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  legacyUrl = await createTestDatabase('idpre_legacy');
  serviceUrl = await createTestDatabase('idpre_notes');
  await sql(legacyUrl, `CREATE TABLE accounts (id serial PRIMARY KEY, email text NOT NULL); CREATE TABLE notes (id serial PRIMARY KEY, account_id integer NOT NULL, body text NOT NULL);
    INSERT INTO accounts (email) SELECT 'a' || g || '@example.test' FROM generate_series(1, 5) g; INSERT INTO notes (account_id, body) SELECT 1, 'note ' || g FROM generate_series(1, 40) g`);
  await sql(serviceUrl, `CREATE TABLE notes (id serial PRIMARY KEY, account_id integer NOT NULL, body text NOT NULL); CREATE TABLE accounts (id integer PRIMARY KEY, email text NOT NULL)`);
  config = resolveConfig({
    legacy: { database: legacyUrl },
    services: [
      { name: 'notes', prefix: '/api/notes', port: 5999, database: serviceUrl, order: 1, tables: [{ source: 'notes' }, { source: 'accounts', replica: true }] },
      { name: 'reports', prefix: '/api/reports', port: 5998, database: serviceUrl, order: 2, readOnly: true, tables: [{ source: 'notes' }] },
    ],
  });
});

afterAll(async () => {
  if (serviceUrl) await dropTestDatabase(serviceUrl);
  if (legacyUrl) await dropTestDatabase(legacyUrl);
});

const idCheck = async (service = config.services[0], c = config) => (await runChecks({ config: c } as ProbeContext, service, ['id-ranges']))[0];

describe('the canary preflight checks the ids the service will create (id-ranges)', () => {
  it('runs before every step that lets the service take writes: canary and switch, not shadow', () => {
    const plan = (phase: Phase, kind: 'shadow' | 'canary' | 'full') =>
      planCommand({ phase, weight: phase === 'canary' ? 10 : 0 }, kind === 'canary' ? { kind, weight: 10 } : { kind });
    const checks = (p: ReturnType<typeof plan>) => (p.ok ? p.checks : []);
    expect(checks(plan('shadow', 'canary'))).toContain('id-ranges');
    expect(checks(plan('rolled-back', 'canary'))).toContain('id-ranges');
    expect(checks(plan('canary', 'full'))).toContain('id-ranges');
    expect(checks(plan('syncing', 'shadow'))).not.toContain('id-ranges');
  });

  it('refuses a serial from 1 with the exact statement to run, not retriable, and passes once it is run', async () => {
    const refused = await idCheck();
    expect(refused).toMatchObject({ name: 'id-ranges', ok: false, retriable: false });
    expect(refused.reason).toContain('the ids notes creates could collide with the monolith');
    const statement = 'ALTER SEQUENCE public.notes_id_seq MINVALUE 1000000001 START WITH 1000000001 RESTART WITH 1000000001;';
    expect(refused.reason).toContain(`run on notes's database: ${statement} (or: strangler sync start notes --fix-sequences)`);
    // The replica (accounts, written only by the monolith) is not the service's to number.
    expect(refused.reason).not.toContain('accounts');

    await sql(serviceUrl, statement);
    expect(await idCheck()).toMatchObject({ ok: true, reason: "notes: ids from the service's own range" });
  });

  it("counts ids the reverse sync copied back from the service as the service's, not the monolith's (regression: the switch after a canary was refused)", async () => {
    // A note the service created during the canary, copied back into the monolith's table.
    await sql(legacyUrl, `INSERT INTO notes (id, account_id, body) VALUES (1000000005, 1, 'made by the service')`);
    expect(await idCheck()).toMatchObject({ ok: true });
    // The monolith's own sequence reaching the range is still a collision.
    await sql(legacyUrl, `SELECT setval('notes_id_seq', 1000000002)`);
    expect(await idCheck()).toMatchObject({ ok: false, reason: expect.stringContaining("the monolith's notes already has ids up to 1000000002") });
    await sql(legacyUrl, `SELECT setval('notes_id_seq', 40)`);
  });

  it('passes a read-only service without asking, and refuses a service whose database does not exist', async () => {
    expect(await idCheck(config.services[1])).toMatchObject({ ok: true, reason: 'reports is read-only: it creates no ids' });
    const gone = { ...config.services[0], databaseUrl: serviceUrl.replace(/[^/]+$/, 't_idpre_never_created') };
    expect(await idCheck(gone)).toMatchObject({ ok: false, retriable: false, reason: 'the database of notes does not exist; create it and its tables: strangler sync start notes' });
  });
});
