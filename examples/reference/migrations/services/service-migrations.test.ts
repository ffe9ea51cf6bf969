import pg from 'pg';
import { expect, it } from 'vitest';
import { resolve } from 'node:path';
import { loadConfig } from '../../../../core/config/load.ts';
import { createTestDatabase, dropTestDatabase, ROOT, sharedStack } from '../../../../test/harness.ts';
import { migrateDownAll, migrateLatest } from '../../../../migrations/runner.ts';
import { serviceMigrations } from './index.ts';

const config = () => loadConfig(resolve(ROOT, 'strangler.yaml'), { postgresUrl: sharedStack().pgBaseUrl, logLevel: 'silent' });

it.each(['auth', 'invoices', 'templates', 'ocr', 'analytics', 'chat'])('migrates the %s database up (ids in the service range) and every migration back down', async (name) => {
  const url = await createTestDatabase(`svc_mig_${name}`);
  try {
    const service = { ...config().services.find((s) => s.name === name)!, databaseUrl: url };
    const set = serviceMigrations(service);
    await migrateLatest(url, set);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const tables = (await client.query(`SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE 'knex%' ORDER BY 1`)).rows.map((r) => r.tablename);
      expect(tables).toEqual([...service.tables.map((t) => t.target), ...(name === 'auth' ? ['signing_keys'] : []), ...(name === 'ocr' ? ['ocr_jobs'] : []), ...(['invoices', 'ocr'].includes(name) ? ['event_outbox'] : []), ...(name === 'analytics' ? ['analytics_activity', 'event_processed'] : [])].sort());
      const owned = service.tables.find((t) => !t.replica && !service.readOnly);
      if (owned) {
        const { rows } = await client.query(`SELECT pg_get_expr(adbin, adrelid) AS def FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum WHERE d.adrelid = $1::regclass AND a.attname = 'id'`, [owned.target]);
        expect(rows[0].def).toMatch(/nextval/);
        const seq = await client.query(`SELECT start_value::bigint AS s FROM pg_sequences WHERE sequencename = $1`, [`${owned.target}_id_seq`]);
        expect(Number(seq.rows[0].s)).toBe(1_000_000_001);
      }
      await migrateDownAll(url, set);
      expect((await client.query(`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE 'knex%'`)).rows[0].n).toBe(0);
    } finally {
      await client.end();
    }
  } finally {
    await dropTestDatabase(url);
  }
});
