import { afterAll, expect, it } from 'vitest';
import { PostgresCluster } from '../../../stack/postgres-cluster.ts';
import { waitFor } from '../../../stack/ports.ts';
import { openDatabase } from './db.ts';

/**
 * The apps' database calls have deadlines (issue 19, item 1): with their database frozen
 * (SIGSTOP: connections open, nothing answers) a request or an events-relay poll fails instead
 * of holding its pooled connection for ever, and once the database answers the app goes on.
 */
let cluster: PostgresCluster | undefined;
afterAll(async () => {
  cluster?.resume();
  await cluster?.destroy();
});

it('fails a query on a frozen database within its deadline and recovers once it answers', async () => {
  cluster = await PostgresCluster.start({ ephemeral: true });
  await cluster.createDatabase('app');
  const db = openDatabase(cluster.url('app'), 2, { connectTimeoutMs: 1_000, queryTimeoutMs: 1_000 });
  try {
    expect((await db.raw('SELECT 1 AS one')).rows[0].one).toBe(1);
    cluster.pause();
    // Both pooled connections and a new one: every call fails, none hangs.
    const frozen = await Promise.allSettled([db.raw('SELECT 2'), db.raw('SELECT 3'), db.raw('SELECT 4')]);
    expect(frozen.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
    cluster.resume();
    await waitFor('the database to answer again', () => db.raw('SELECT 1').then(() => true, () => false), 10_000, 200);
  } finally {
    cluster.resume();
    await db.destroy();
  }
}, 60_000);
