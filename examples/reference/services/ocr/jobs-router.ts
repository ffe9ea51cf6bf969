import { Router } from 'express';
import type { Queue, QueueEvents } from 'bullmq';
import { createUploadReader } from '../../monolith/api/ocr.ts';
import { userId, type ApiContext } from '../../monolith/api/context.ts';
import { withDeadline } from '../../../../core/deadline.ts';
import { HttpError } from '../kit/http-error.ts';
import { idParam } from '../kit/validate.ts';
import type { OcrJobData } from './queue.ts';

const DOC_COLUMNS = ['id', 'filename', 'mime_type', 'size_bytes', 'text', 'fields', 'confidence', 'created_at'];

function documentJson(row: Record<string, any>) {
  return { id: row.id, filename: row.filename, mimeType: row.mime_type, sizeBytes: row.size_bytes, text: row.text, fields: row.fields, confidence: Number(row.confidence), createdAt: row.created_at };
}

/**
 * /api/ocr on the OCR service: asynchronous jobs (POST /jobs → 202, GET /jobs/:id), and the
 * legacy-compatible synchronous POST / that enqueues a job and waits for it (up to a timeout),
 * answering exactly like the monolith.
 */
export function createOcrJobsRouter(ctx: ApiContext & { queue: Queue<OcrJobData>; queueEvents: QueueEvents; maxUploadBytes: number; waitMs: number; attempts?: number; queueTimeoutMs?: number }): Router {
  const router = Router();
  const readUpload = createUploadReader(ctx.maxUploadBytes);
  router.use(ctx.requireUser);

  const enqueue = async (req: import('express').Request, res: import('express').Response) => {
    const upload = await readUpload(req, res); // bad input is refused here, before any job exists
    const [row] = await ctx.db('ocr_jobs').insert({ user_id: userId(req), filename: upload.filename, mime_type: upload.mimeType, content: upload.data, status: 'queued' }).returning(['id']);
    const add = ctx.queue.add('recognize', { jobRow: row.id }, { jobId: `ocr-${row.id}`, attempts: ctx.attempts ?? 3, backoff: { type: 'exponential', delay: 500 }, removeOnComplete: 1000, removeOnFail: 1000 });
    let job: Awaited<typeof add>;
    try {
      // BullMQ waits for Redis as long as it takes; the request does not (a frozen Redis never answers).
      job = await withDeadline(add, ctx.queueTimeoutMs ?? 2_000, 'the job queue (Redis)');
    } catch (err) {
      // Should the job still reach the queue later, a worker completes it and the row says so.
      await ctx.db('ocr_jobs').where({ id: row.id, status: 'queued' }).update({ status: 'failed', error: (err as Error).message, updated_at: ctx.db.fn.now() });
      throw new HttpError(`the scan could not be queued: ${(err as Error).message}; upload it again shortly`, 'NOT_READY');
    }
    return { id: row.id as number, job };
  };

  router.post('/jobs', async (req, res) => {
    const { id } = await enqueue(req, res);
    res.status(202).location(`${req.baseUrl}/jobs/${id}`).json({ id, status: 'queued' });
  });

  router.get('/jobs/:id', async (req, res) => {
    const id = idParam(req.params.id, 'job');
    const row = await ctx.db('ocr_jobs').select('id', 'status', 'attempts', 'error', 'document_id', 'created_at', 'updated_at').where({ id, user_id: userId(req) }).first();
    if (!row) throw new HttpError(`job ${id} not found`, 'NOT_FOUND');
    const doc = row.document_id ? await ctx.db(ctx.tables.ocrDocuments).select(DOC_COLUMNS).where({ id: row.document_id }).first() : null;
    res.json({ id: row.id, status: row.status, attempts: row.attempts, error: row.error, result: doc ? documentJson(doc) : null, createdAt: row.created_at, updatedAt: row.updated_at });
  });

  router.post('/', async (req, res) => {
    const { id, job } = await enqueue(req, res);
    try {
      const { documentId } = (await job.waitUntilFinished(ctx.queueEvents, ctx.waitMs)) as { documentId: number };
      const doc = await ctx.db(ctx.tables.ocrDocuments).select(DOC_COLUMNS).where({ id: documentId }).first();
      res.status(201).location(`${req.baseUrl}/documents/${documentId}`).json(documentJson(doc));
    } catch (err) {
      const row = await ctx.db('ocr_jobs').select('status', 'error').where({ id }).first();
      if (row?.status === 'failed') throw new HttpError(row.error ?? 'the image could not be read', 'UNPROCESSABLE');
      throw new HttpError(`the scan is still being read (job ${id}); fetch it later at ${req.baseUrl}/jobs/${id} (${(err as Error).message})`, 'UPSTREAM_TIMEOUT');
    }
  });

  return router;
}
