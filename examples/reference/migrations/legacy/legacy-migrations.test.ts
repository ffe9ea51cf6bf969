import pg from 'pg';
import { afterAll, expect, it } from 'vitest';
import { createTestDatabase, dropTestDatabase } from '../../../../test/harness.ts';
import { migrateDownAll, migrateLatest } from '../../../../migrations/runner.ts';
import { legacyMigrations } from './index.ts';

const urls: string[] = [];
afterAll(async () => {
  for (const url of urls) await dropTestDatabase(url);
});

async function tables(url: string): Promise<string[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query(`SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE 'knex%' ORDER BY 1`);
    return rows.map((r) => r.tablename);
  } finally {
    await client.end();
  }
}

it('migrates the legacy schema up, is idempotent, and rolls every migration back down', async () => {
  const url = await createTestDatabase('legacy_migrations');
  urls.push(url);
  expect(await migrateLatest(url, legacyMigrations)).toEqual(['001_initial']);
  expect(await migrateLatest(url, legacyMigrations)).toEqual([]);
  expect(await tables(url)).toEqual(['chat_messages', 'invoice_items', 'invoices', 'ocr_documents', 'templates', 'users']);
  await migrateDownAll(url, legacyMigrations);
  expect(await tables(url)).toEqual([]);
});
