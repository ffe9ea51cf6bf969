/**
 * `npm run bench:ocr`: OCR pages per second through the service's own queue (BullMQ workers at
 * concurrency 1 and 2, tesseract.js offline) against the native `tesseract` command on the same
 * generated invoice images in the same run (installed with apt when missing and allowed), with
 * the ratio and the accuracy of both: characters, and invoice number + total extracted exactly.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { loadConfig } from '../../../core/config/load.ts';
import { silentLogger } from '../../../core/logger.ts';
import { openDatabase } from '../monolith/db.ts';
import { extractInvoiceFields } from '../monolith/ocr/invoice-fields.ts';
import { renderTextPng } from '../monolith/ocr/text-image.ts';
import { migrateService } from '../migrations/services/index.ts';
import { createOcrQueue, startOcrWorker } from '../services/ocr/queue.ts';
import { LocalStack } from '../../../stack/index.ts';
import { aptInstall } from '../../../bench/apt.ts';

const PAGES = Number(process.env.BENCH_PAGES ?? 12);
const run = promisify(execFile);
const say = (line: string) => process.stdout.write(`${line}\n`);

interface Page {
  lines: string[];
  number: string;
  total: string;
  png: Buffer;
  file: string;
}

/** Deterministic invoices: supplier, number, date, two to four item lines, the total. */
function pages(dir: string): Page[] {
  const suppliers = ['Acme Supplies Ltd', 'Northwind Traders', 'Globex Corporation', 'Initech Services', 'Umbrella Logistics', 'Stark Components'];
  return Array.from({ length: PAGES }, (_, i) => {
    const items = Array.from({ length: 2 + (i % 3) }, (_, k) => ({ what: ['Consulting', 'Hardware', 'Licence', 'Support'][k], cents: 1000 + ((i * 7919 + k * 104729) % 90000) }));
    const total = (items.reduce((s, it) => s + it.cents, 0) / 100).toFixed(2);
    const number = `INV-${String(1000 + i * 37).padStart(5, '0')}`;
    const lines = [suppliers[i % suppliers.length], `Invoice No: ${number}`, `Date: 2026-0${1 + (i % 9)}-1${i % 10}`, ...items.map((it) => `${it.what} ${(it.cents / 100).toFixed(2)}`), `Total: ${total} EUR`];
    const png = renderTextPng(lines);
    const file = join(dir, `page-${i}.png`);
    writeFileSync(file, png);
    return { lines, number, total, png, file };
  });
}

function levenshtein(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length];
}

const norm = (s: string) => s.replace(/\s+/g, ' ').trim();

function accuracy(page: Page, text: string) {
  const truth = norm(page.lines.join('\n'));
  const chars = Math.max(0, 1 - levenshtein(norm(text), truth) / truth.length);
  const f = extractInvoiceFields(text);
  return { chars, fields: f.invoiceNumber === page.number && f.total === page.total };
}

interface Row {
  name: string;
  parallel: number;
  seconds: number;
  chars: number;
  fields: number;
}

async function nativeRun(all: Page[], parallel: number): Promise<{ seconds: number; texts: string[] }> {
  const texts: string[] = new Array(all.length);
  const started = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < all.length) {
        const i = next++;
        texts[i] = (await run('tesseract', [all[i].file, 'stdout'], { env: { ...process.env, OMP_THREAD_LIMIT: '1' } })).stdout;
      }
    }),
  );
  return { seconds: (performance.now() - started) / 1000, texts };
}

function hasTesseract(): boolean {
  try {
    execFileSync('tesseract', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return aptInstall(['tesseract-ocr', 'tesseract-ocr-eng'], 'the baseline', say, 300_000);
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-ocr-'));
  const stack = await LocalStack.start();
  try {
    const all = pages(dir);
    const config = loadConfig(resolve(import.meta.dirname, '../../../strangler.yaml'), { ...stack.overrides, logLevel: 'silent' });
    await stack.postgres.createDatabase('svc_ocr');
    const service = config.services.find((s) => s.name === 'ocr')!;
    await migrateService(service);
    const db = openDatabase(service.databaseUrl);
    const queue = createOcrQueue(config);
    const rows: Row[] = [];
    const table = new Map<string, Array<{ chars: number; fields: boolean }>>();

    for (const concurrency of [1, 2]) {
      const workers = startOcrWorker(config, db, silentLogger, { concurrency });
      // Warm-up (the traineddata load), not timed: one page per engine.
      const enqueue = async (page: Page) => {
        const [row] = await db('ocr_jobs').insert({ user_id: 1, filename: 'bench.png', mime_type: 'image/png', content: page.png, status: 'queued' }).returning(['id']);
        const job = await queue.queue.add('recognize', { jobRow: row.id }, { jobId: `ocr-${row.id}`, attempts: 1, removeOnComplete: 1000 });
        return job.waitUntilFinished(queue.events, 120_000) as Promise<{ documentId: number }>;
      };
      await Promise.all(Array.from({ length: concurrency }, () => enqueue(all[0])));
      const started = performance.now();
      const results = await Promise.all(all.map(enqueue));
      const seconds = (performance.now() - started) / 1000;
      const docs = await db('ocr_documents').whereIn('id', results.map((r) => r.documentId)).select('id', 'text');
      const textOf = new Map(docs.map((d) => [d.id, d.text as string]));
      const acc = all.map((p, i) => accuracy(p, textOf.get(results[i].documentId) ?? ''));
      rows.push({ name: `tesseract.js via the queue, concurrency ${concurrency}`, parallel: concurrency, seconds, chars: avg(acc.map((a) => a.chars)), fields: share(acc.map((a) => a.fields)) });
      table.set(`js${concurrency}`, acc);
      await workers.close();
    }

    const native: Row[] = [];
    if (hasTesseract()) {
      await nativeRun(all.slice(0, 1), 1); // warm the page cache
      for (const parallel of [1, 2]) {
        const { seconds, texts } = await nativeRun(all, parallel);
        const acc = all.map((p, i) => accuracy(p, texts[i]));
        native.push({ name: `native tesseract, ${parallel} at a time`, parallel, seconds, chars: avg(acc.map((a) => a.chars)), fields: share(acc.map((a) => a.fields)) });
      }
    } else {
      say('native tesseract not installed and not installable here (needs root and apt): its rows are missing');
    }

    const head = ['engine', 'pages', 's', 'pages/s', '× native', 'chars %', 'fields %'];
    const lines = [...rows, ...native].map((r) => {
      const base = native.find((n) => n.parallel === r.parallel);
      return [r.name, String(PAGES), r.seconds.toFixed(2), (PAGES / r.seconds).toFixed(2), base ? (base.seconds / r.seconds).toFixed(2) : 'n/a', (100 * r.chars).toFixed(1), (100 * r.fields).toFixed(0)];
    });
    const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
    const fmt = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
    say('');
    say(fmt(head));
    for (const l of lines) say(fmt(l));
    const best = rows[rows.length - 1];
    const nativeBest = native[native.length - 1];
    say(`\nqueue at concurrency 2: ${(PAGES / best.seconds).toFixed(2)} pages/s${nativeBest ? `, ${(nativeBest.seconds / best.seconds).toFixed(2)}× native tesseract at 2 (${(PAGES / nativeBest.seconds).toFixed(2)} pages/s)` : ''}; character accuracy ${(100 * best.chars).toFixed(1)} %${nativeBest ? ` vs ${(100 * nativeBest.chars).toFixed(1)} %` : ''}`);
    await queue.close();
    await db.destroy();
  } finally {
    await stack.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
const share = (xs: boolean[]) => xs.filter(Boolean).length / Math.max(1, xs.length);

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`bench:ocr failed: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
