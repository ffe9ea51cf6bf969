import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { ResolvedConfig } from '../../../core/config/load.ts';
import { silentLogger } from '../../../core/logger.ts';
import { renderTextPng } from '../monolith/ocr/text-image.ts';
import { seedLegacy } from '../monolith/seed.ts';
import { signLegacyToken } from './kit/jwt.ts';
import { waitFor } from '../../../stack/ports.ts';
import { configYaml, createTestDatabase, dropTestDatabase, legacyTestConfig, ROOT } from '../../../test/harness.ts';
import { startService, type RunningService } from './app.ts';
import { eventStream } from './events/events.ts';
import { Redis } from 'ioredis';

let config: ResolvedConfig;
let ocr: RunningService;
let cleanup: () => Promise<void>;
let token: string;
const children: ChildProcess[] = [];
const scan = renderTextPng(['Acme Supplies Ltd', 'Invoice No: INV-777', 'Total: 42.00 EUR']);

function worker(file: string): { child: ChildProcess; ready: Promise<void> } {
  const child = spawn(process.execPath, [resolve(ROOT, 'examples/reference/bin.js'), 'ocr', 'worker', '--lock-ms', '2000', '--config', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  const ready = new Promise<void>((ok, fail) => {
    let err = '';
    child.stderr!.on('data', (d) => {
      err += d;
      if (err.includes('ocr worker ready')) ok();
    });
    child.once('exit', (code) => fail(new Error(`ocr worker exited ${code}: ${err}`)));
  });
  return { child, ready };
}

const api = (path: string, init: RequestInit = {}) => fetch(`${ocr.url}${path}`, { ...init, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(init.headers ?? {}) } });

beforeAll(async () => {
  const t = await legacyTestConfig('ocr_queue');
  await seedLegacy(t.config.legacy.databaseUrl, { users: 2, invoices: 2, seed: 1 });
  const db = await createTestDatabase('ocr_queue_svc');
  config = { ...t.config, services: t.config.services.map((s) => (s.name === 'ocr' ? { ...s, databaseUrl: db } : s)) };
  // No worker inside the service: the separate worker processes do the reading.
  ocr = await startService(config, 'ocr', { port: 0, logger: (await import('../../../core/logger.ts')).createLogger('ocr-test', 'error'), ocrWorkers: 0 });
  token = await signLegacyToken({ id: 1, email: 'user1@example.test' }, { secret: config.legacy.jwtSecret!, issuer: config.legacy.jwtIssuer, ttlSeconds: 600 });
  cleanup = async () => {
    await ocr.close();
    await dropTestDatabase(db);
    await t.cleanup();
  };
}, 60_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await cleanup?.();
});

describe('OCR on a queue', () => {
  it('accepts a job with 202, a worker process reads it, and the job gives the result; bad input is refused before any job', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ocr-'));
    const file = join(dir, 'strangler.yaml');
    writeFileSync(file, stringify(configYaml(config)));
    const w = worker(file);
    await w.ready;
    const res = await api('/api/ocr/jobs', { method: 'POST', body: JSON.stringify({ filename: 'a.png', contentBase64: scan.toString('base64') }) });
    expect(res.status, await res.clone().text()).toBe(202);
    const { id } = (await res.json()) as { id: number };
    let job: any;
    await waitFor('the job to complete', async () => (job = (await (await api(`/api/ocr/jobs/${id}`)).json()) as any).status === 'completed', 30_000, 100);
    expect(job.result).toMatchObject({ filename: 'a.png', fields: { invoiceNumber: 'INV-777', total: '42.00', currency: 'EUR' } });
    // The worker announced it: ocr.completed, relayed by the service to its stream.
    const redis = new Redis(config.redis.url);
    let events: any[] = [];
    await waitFor('ocr.completed on the stream', async () => (events = (await redis.xrange(eventStream(config.redis.keyPrefix, 'ocr'), '-', '+')).map(([, f]) => JSON.parse(f[1]))).length > 0, 10_000);
    redis.disconnect();
    expect(events[0]).toMatchObject({ type: 'ocr.completed', source: 'ocr', userId: 1, data: { documentId: job.result.id, filename: 'a.png' } });
    const sync = await api('/api/ocr', { method: 'POST', body: JSON.stringify({ filename: 'b.png', contentBase64: scan.toString('base64') }) });
    expect(sync.status).toBe(201);
    expect(((await sync.json()) as any).text).toContain('INV-777');
    expect((await api('/api/ocr/jobs', { method: 'POST', body: JSON.stringify({ filename: 'x.txt', contentBase64: Buffer.from('hello').toString('base64') }) })).status).toBe(415);
    const broken = await api('/api/ocr', { method: 'POST', body: JSON.stringify({ filename: 'c.png', contentBase64: scan.subarray(0, 60).toString('base64') }) });
    expect(broken.status).toBe(422);
    w.child.kill('SIGTERM');
    await new Promise((r) => w.child.once('exit', r));
  }, 90_000);

  it('loses no job when a worker is killed with SIGKILL mid-job: another worker finishes it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ocr-'));
    const file = join(dir, 'strangler.yaml');
    writeFileSync(file, stringify(configYaml(config)));
    const a = worker(file);
    await a.ready;
    const big = renderTextPng(Array.from({ length: 30 }, (_, i) => `Line ${i} of a long scan, Invoice No: INV-${1000 + i}`));
    const res = await api('/api/ocr/jobs', { method: 'POST', body: JSON.stringify({ filename: 'long.png', contentBase64: big.toString('base64') }) });
    const { id } = (await res.json()) as { id: number };
    await waitFor('worker A to take the job', async () => ((await (await api(`/api/ocr/jobs/${id}`)).json()) as any).status === 'active', 20_000, 10);
    a.child.kill('SIGKILL');
    const b = worker(file);
    await b.ready;
    let job: any;
    await waitFor('worker B to finish the job', async () => (job = (await (await api(`/api/ocr/jobs/${id}`)).json()) as any).status === 'completed', 60_000, 200);
    expect(job.attempts).toBeGreaterThanOrEqual(2);
    expect(job.result.text).toContain('INV-1000');
    b.child.kill('SIGTERM');
    await new Promise((r) => b.child.once('exit', r));
  }, 120_000);
});
