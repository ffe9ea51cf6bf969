import express, { Router, type NextFunction, type Request, type Response } from 'express';
import multer from 'multer';
import { z } from 'zod';
import { HttpError } from '../../services/kit/http-error.ts';
import { idParam, parseInput } from '../../services/kit/validate.ts';
import { extractInvoiceFields } from '../ocr/invoice-fields.ts';
import { sniffImageType, type OcrEngine } from '../ocr/ocr-engine.ts';
import { userId, type ApiContext } from './context.ts';

interface OcrDocumentRow {
  id: number;
  user_id: number;
  filename: string;
  mime_type: string;
  size_bytes: number;
  content?: Buffer;
  text: string;
  fields: Record<string, unknown>;
  confidence: string;
  created_at: Date;
}

function documentJson(row: OcrDocumentRow) {
  return {
    id: row.id,
    filename: row.filename,
    mimeType: row.mime_type,
    sizeBytes: row.size_bytes,
    text: row.text,
    fields: row.fields,
    confidence: Number(row.confidence),
    createdAt: row.created_at,
  };
}

const JsonUpload = z.object({ filename: z.string().trim().min(1).max(255).default('upload'), contentBase64: z.string().min(1, 'required: the image, base64-encoded') }).strict();
const LIST_COLUMNS = ['id', 'user_id', 'filename', 'mime_type', 'size_bytes', 'text', 'fields', 'confidence', 'created_at'];

/** An upload, checked: present, not empty, not too large, an image tesseract reads. */
export interface Upload {
  filename: string;
  data: Buffer;
  mimeType: string;
}

/** Reads the image from multipart field `file` or a JSON `{ filename, contentBase64 }` body. */
export function createUploadReader(maxBytes: number) {
  const multipart = multer({ storage: multer.memoryStorage(), limits: { fileSize: maxBytes, files: 1, fields: 10 } }).single('file');
  const json = express.json({ limit: Math.ceil(maxBytes * 1.37) + 1024 });
  const tooLarge = () => new HttpError(`the image is larger than ${maxBytes} bytes; send a smaller scan`, 'PAYLOAD_TOO_LARGE');

  return async function readUpload(req: Request, res: Response): Promise<Upload> {
    const run = (mw: (req: Request, res: Response, next: NextFunction) => void) =>
      new Promise<void>((resolve, reject) => mw(req, res, (err?: unknown) => (err ? reject(err) : resolve())));
    let filename: string;
    let data: Buffer;
    if (req.is('multipart/form-data')) {
      await run(multipart).catch((err: { code?: string }) => {
        if (err.code === 'LIMIT_FILE_SIZE') throw tooLarge();
        if (err instanceof multer.MulterError) throw new HttpError(`the upload is not valid (${err.message}); send one file in the field "file"`, 'BAD_INPUT');
        throw err;
      });
      if (!req.file) throw new HttpError('no image: send it in the multipart field "file"', 'VALIDATION_FAILED');
      filename = req.file.originalname || 'upload';
      data = req.file.buffer;
    } else if (req.is('application/json')) {
      await run(json).catch((err: { type?: string }) => {
        if (err.type === 'entity.too.large') throw tooLarge();
        throw err;
      });
      const body = parseInput(JsonUpload, req.body);
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body.contentBase64.replace(/\s/g, ''))) {
        throw new HttpError('invalid body: contentBase64: expected base64 text', 'VALIDATION_FAILED');
      }
      filename = body.filename;
      data = Buffer.from(body.contentBase64, 'base64');
    } else {
      throw new HttpError('send the image as multipart/form-data (field "file") or as JSON { filename, contentBase64 }', 'UNSUPPORTED_MEDIA_TYPE');
    }
    if (data.length === 0) throw new HttpError('the image is empty', 'VALIDATION_FAILED');
    if (data.length > maxBytes) throw tooLarge();
    const mimeType = sniffImageType(data);
    if (!mimeType) throw new HttpError(`"${filename}" is not an image; send a PNG, JPEG, TIFF, BMP or GIF scan`, 'UNSUPPORTED_MEDIA_TYPE');
    return { filename, data, mimeType };
  };
}

/** /api/ocr: upload a scan, read it synchronously, store it; list and fetch stored documents. */
export function createOcrRouter(ctx: ApiContext & { engine: OcrEngine; maxUploadBytes: number }): Router {
  const { db, tables } = ctx;
  const router = Router();
  const readUpload = createUploadReader(ctx.maxUploadBytes);
  router.use(ctx.requireUser);

  router.post('/', async (req, res) => {
    const upload = await readUpload(req, res);
    const { text, confidence } = await ctx.engine.recognize(upload.data);
    const [row] = (await db<OcrDocumentRow>(tables.ocrDocuments)
      .insert({
        user_id: userId(req),
        filename: upload.filename,
        mime_type: upload.mimeType,
        size_bytes: upload.data.length,
        content: upload.data,
        text,
        fields: JSON.stringify(extractInvoiceFields(text)) as never,
        confidence: String(confidence),
      })
      .returning(LIST_COLUMNS)) as unknown as OcrDocumentRow[];
    res.status(201).location(`${req.baseUrl}/documents/${row.id}`).json(documentJson(row));
  });

  router.get('/documents', async (req, res) => {
    const rows = (await db(tables.ocrDocuments).select(LIST_COLUMNS).where({ user_id: userId(req) }).orderBy('id', 'desc').limit(100)) as OcrDocumentRow[];
    res.json({ items: rows.map(documentJson) });
  });

  const owned = async (req: Request, columns: string[]) => {
    const id = idParam(req.params.id, 'document');
    const row = (await db(tables.ocrDocuments).select(columns).where({ id, user_id: userId(req) }).first()) as OcrDocumentRow | undefined;
    if (!row) throw new HttpError(`document ${id} not found`, 'NOT_FOUND');
    return row;
  };
  router.get('/documents/:id', async (req, res) => res.json(documentJson(await owned(req, LIST_COLUMNS))));
  router.get('/documents/:id/content', async (req, res) => {
    const row = await owned(req, ['mime_type', 'content']);
    res.type(row.mime_type).send(row.content);
  });

  return router;
}
