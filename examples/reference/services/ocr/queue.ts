import { Queue, QueueEvents, UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Knex } from 'knex';
import type { ResolvedConfig } from '../../../../core/config/load.ts';
import { StranglerError } from '../../../../core/errors.ts';
import type { Logger } from '../../../../core/logger.ts';
import { extractInvoiceFields } from '../../monolith/ocr/invoice-fields.ts';
import { createOcrEngine } from '../../monolith/ocr/ocr-engine.ts';
import { outboxRecorder } from '../events/events.ts';

export const OCR_QUEUE = 'ocr';

export interface OcrJobData {
  /** The ocr_jobs row holding the upload. */
  jobRow: number;
}

/** BullMQ on the strangler Redis, under its key prefix. BullMQ needs maxRetriesPerRequest: null. */
export function queueConnection(config: ResolvedConfig) {
  const url = new URL(config.redis.url);
  return {
    connection: { host: url.hostname, port: Number(url.port || 6379), password: url.password || undefined, maxRetriesPerRequest: null },
    prefix: `${config.redis.keyPrefix}bull`,
  };
}

export function createOcrQueue(config: ResolvedConfig) {
  const opts = queueConnection(config);
  const queue = new Queue<OcrJobData>(OCR_QUEUE, opts);
  const events = new QueueEvents(OCR_QUEUE, opts);
  return {
    queue,
    events,
    async close() {
      await events.close();
      await queue.close();
    },
  };
}

export interface OcrWorkerOptions {
  concurrency?: number;
  /** How long a job stays locked to a worker without a renewal; a killed worker's job is retried after it. */
  lockDurationMs?: number;
  attempts?: number;
}

/**
 * OCR workers: recognise the upload of a job, then store the document and mark the job done in
 * one transaction. A worker that dies mid-job leaves the job locked until its lock lapses;
 * BullMQ's stalled-job check then gives it to another worker, so no job is lost. A bad image is
 * a final failure (no retry); anything else is retried with backoff.
 */
export function startOcrWorker(config: ResolvedConfig, db: Knex, logger: Logger, options: OcrWorkerOptions = {}) {
  const concurrency = options.concurrency ?? 1;
  const engines = Array.from({ length: concurrency }, () => createOcrEngine());
  let next = 0;
  const worker = new Worker<OcrJobData>(
    OCR_QUEUE,
    async (job: Job<OcrJobData>) => {
      const row = await db('ocr_jobs').where({ id: job.data.jobRow }).first();
      if (!row) throw new UnrecoverableError(`ocr job row ${job.data.jobRow} is gone`);
      // Delivered again after its document was stored (the worker died before BullMQ heard): done already.
      if (row.status === 'completed') return { documentId: row.document_id };
      // Counts deliveries: a job taken back from a killed worker is counted again.
      await db('ocr_jobs').where({ id: row.id }).update({ status: 'active', attempts: db.raw('attempts + 1'), updated_at: db.fn.now() });
      const engine = engines[next++ % engines.length];
      let result;
      try {
        result = await engine.recognize(row.content);
      } catch (err) {
        if (err instanceof StranglerError && err.code === 'UNPROCESSABLE') {
          await db('ocr_jobs').where({ id: row.id }).update({ status: 'failed', error: err.message, content: null, updated_at: db.fn.now() });
          throw new UnrecoverableError(err.message);
        }
        throw err;
      }
      const documentId = await db.transaction(async (trx) => {
        const [doc] = await trx('ocr_documents')
          .insert({ user_id: row.user_id, filename: row.filename, mime_type: row.mime_type, size_bytes: row.content.length, content: row.content, text: result.text, fields: JSON.stringify(extractInvoiceFields(result.text)), confidence: String(result.confidence) })
          .returning('id');
        await trx('ocr_jobs').where({ id: row.id }).update({ status: 'completed', document_id: doc.id, content: null, error: null, updated_at: trx.fn.now() });
        await outboxRecorder.record(trx, 'ocr.completed', row.user_id, { documentId: doc.id, jobId: String(row.id), filename: row.filename, confidence: result.confidence });
        return doc.id as number;
      });
      return { documentId };
    },
    { ...queueConnection(config), concurrency, lockDuration: options.lockDurationMs ?? 30_000, stalledInterval: Math.min(options.lockDurationMs ?? 30_000, 30_000) },
  );
  worker.on('failed', (job, err) => {
    if (!job) return;
    const final = err instanceof UnrecoverableError || job.attemptsMade >= (job.opts.attempts ?? 1);
    logger.warn({ err, job: job.id, attempts: job.attemptsMade, final }, 'ocr job failed');
    if (final) void db('ocr_jobs').where({ id: job.data.jobRow }).update({ status: 'failed', error: err.message, updated_at: db.fn.now() }).catch(() => undefined);
  });
  worker.on('error', (err) => logger.error({ err }, 'ocr worker error'));
  return {
    worker,
    async close() {
      await worker.close();
      for (const e of engines) await e.close();
    },
  };
}
