import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { Redis } from 'ioredis';
import type { Knex } from 'knex';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResolvedConfig } from '../../../core/config/load.ts';
import { serviceByName } from '../../../core/config/load.ts';
import { silentLogger } from '../../../core/logger.ts';
import { openDatabase } from '../monolith/db.ts';
import { migrateService } from '../migrations/services/index.ts';
import { waitFor } from '../../../stack/ports.ts';
import { createTestDatabase, dropTestDatabase, jsonClient, legacyTestConfig, ROOT } from '../../../test/harness.ts';
import { startService, type RunningService } from './app.ts';
import { deadLetterStream, eventStream, type DomainEvent } from './events/events.ts';
import { signLegacyToken } from './kit/jwt.ts';

let config: ResolvedConfig;
let cleanup: () => Promise<void>;
const databases: string[] = [];

beforeAll(async () => {
  const t = await legacyTestConfig('events');
  const invoicesDb = await createTestDatabase('events_invoices');
  const analyticsDb = await createTestDatabase('events_analytics');
  databases.push(invoicesDb, analyticsDb);
  const urls: Record<string, string> = { invoices: invoicesDb, analytics: analyticsDb };
  config = { ...t.config, services: t.config.services.map((s) => (urls[s.name] ? { ...s, databaseUrl: urls[s.name] } : s)) };
  cleanup = async () => {
    for (const db of databases) await dropTestDatabase(db);
    await t.cleanup();
  };
});

afterAll(async () => {
  await cleanup?.();
});

describe('domain events from the invoices service to analytics', () => {
  it('publishes invoice.created and invoice.paid from the outbox, and analytics counts them', async () => {
    const invoices = await startService(config, 'invoices', { port: 0, logger: silentLogger });
    const analytics = await startService(config, 'analytics', { port: 0, logger: silentLogger, eventConsumer: 'analytics-test' });
    try {
      const token = await signLegacyToken({ id: 7, email: 'seven@example.test' }, { secret: config.legacy.jwtSecret!, issuer: config.legacy.jwtIssuer, ttlSeconds: 600 });
      const inv = jsonClient(invoices.url);
      const a = await inv('POST', '/api/invoices', { customerName: 'Events Co', items: [{ description: 'Work', quantity: '2', unitPrice: '50.00' }] }, token);
      await inv('POST', '/api/invoices', { customerName: 'Events Co', items: [{ description: 'More', quantity: '1', unitPrice: '10.00' }] }, token);
      expect((await inv('POST', `/api/invoices/${a.json.id}/pay`, undefined, token)).status).toBe(200);
      // A refused write announces nothing.
      expect((await inv('POST', `/api/invoices/${a.json.id}/pay`, undefined, token)).status).toBe(409);

      const an = jsonClient(analytics.url);
      let items: Array<Record<string, unknown>> = [];
      await waitFor('analytics to count the events', async () => {
        items = (await an('GET', '/api/analytics/activity', undefined, token)).json.items;
        return items.length === 1 && items[0].invoicesCreated === 2 && items[0].invoicesPaid === 1;
      }, 10_000);
      expect(items[0]).toMatchObject({ day: new Date().toISOString().slice(0, 10), paidTotal: '100.00', documentsRead: 0 });

      // On the stream: each event once, in commit order, with its data.
      const redis = new Redis(config.redis.url);
      const entries = await redis.xrange(eventStream(config.redis.keyPrefix, 'invoices'), '-', '+');
      redis.disconnect();
      const events = entries.map(([, fields]) => JSON.parse(fields[1]) as DomainEvent);
      expect(events.map((e) => e.type)).toEqual(['invoice.created', 'invoice.created', 'invoice.paid']);
      expect(events[2]).toMatchObject({ source: 'invoices', userId: 7, data: { invoiceId: a.json.id, total: '100.00' } });
      expect(new Set(events.map((e) => e.id)).size).toBe(3);
      expect(await invoices.db('event_outbox').whereNull('published_at').count().first()).toEqual({ count: '0' });
    } finally {
      await analytics.close();
      await invoices.close();
    }
  });
});

describe('the analytics event consumer', () => {
  const children: ChildProcess[] = [];
  let db: Knex;
  let redis: Redis;
  let dbUrl: string;

  function consumer(name: string, claimIdleMs = 30_000): Promise<ChildProcess> {
    const child = spawn(process.execPath, ['--import', 'tsx', resolve(ROOT, 'examples/reference/services/fixtures/event-consumer.ts')], {
      env: { ...process.env, STRANGLER_TEST_DB: dbUrl, REDIS_URL: config.redis.url, KEY_PREFIX: `${config.redis.keyPrefix}once:`, CONSUMER: name, CLAIM_IDLE_MS: String(claimIdleMs), HANDLE_DELAY_MS: '8' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(child);
    return new Promise((ok, fail) => {
      child.stdout!.on('data', (d) => String(d).includes('consuming') && ok(child));
      child.once('exit', (code) => fail(new Error(`consumer exited ${code}`)));
    });
  }
  const processed = async () => Number((await db('event_processed').count().first())!.count);
  const kill = async (child: ChildProcess) => {
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
  };

  beforeAll(async () => {
    dbUrl = await createTestDatabase('events_once');
    databases.push(dbUrl);
    await migrateService({ ...serviceByName(config, 'analytics'), databaseUrl: dbUrl });
    db = openDatabase(dbUrl);
    redis = new Redis(config.redis.url);
  });
  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL');
    await db?.destroy();
    redis?.disconnect();
  });

  it('applies each event once across SIGKILLs, restarts, a takeover and duplicate publishing', async () => {
    const prefix = `${config.redis.keyPrefix}once:`;
    const stream = eventStream(prefix, 'invoices');
    const events: DomainEvent[] = Array.from({ length: 300 }, (_, i) => ({ id: randomUUID(), type: 'invoice.created', source: 'invoices', occurredAt: '2026-11-20T10:00:00.000Z', userId: 1 + (i % 3), data: { invoiceId: i } }));
    const multi = redis.multi();
    for (const [i, e] of events.entries()) {
      multi.xadd(stream, '*', 'event', JSON.stringify(e));
      // A relay that died between XADD and marking its rows published sends them again.
      if (i % 10 === 0) multi.xadd(stream, '*', 'event', JSON.stringify(e));
    }
    multi.xadd(stream, '*', 'event', '{not json');
    await multi.exec();

    let c = await consumer('c1');
    await waitFor('some events processed', async () => (await processed()) >= 60, 20_000);
    await kill(c);
    // Restarted under the same name: it re-reads what it had not acknowledged.
    c = await consumer('c1');
    await waitFor('more events processed', async () => (await processed()) >= 150, 20_000);
    await kill(c);
    // c1 never comes back: c2 takes over its pending entries once they are idle.
    c = await consumer('c2', 300);
    await waitFor('every event processed and acknowledged', async () => {
      const [count] = (await redis.xpending(stream, 'analytics')) as [number];
      return (await processed()) === 300 && count === 0;
    }, 30_000);
    await kill(c);

    const rows = await db('analytics_activity').select('user_id', 'invoices_created').orderBy('user_id');
    expect(rows).toEqual([{ user_id: 1, invoices_created: 100 }, { user_id: 2, invoices_created: 100 }, { user_id: 3, invoices_created: 100 }]);
    const dead = await redis.xrange(deadLetterStream(prefix), '-', '+');
    expect(dead).toHaveLength(1);
    expect(dead[0][1]).toEqual(expect.arrayContaining(['reason', expect.stringContaining('unreadable event')]));
  });
});
