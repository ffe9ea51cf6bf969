import { createRequire } from 'node:module';
import { createWorker, OEM, type Worker } from 'tesseract.js';
import { StranglerError } from '../../../../core/errors.ts';

const require = createRequire(import.meta.url);
// SECURITY/offline: the traineddata comes from the npm package, never from a CDN.
const ENG = require('@tesseract.js-data/eng') as { langPath: string; gzip: boolean };

export interface OcrResult {
  text: string;
  /** Tesseract's mean confidence, 0-100. */
  confidence: number;
}

export interface OcrEngine {
  recognize(image: Buffer): Promise<OcrResult>;
  close(): Promise<void>;
}

/** Image formats tesseract reads, by their magic bytes. */
const FORMATS: Array<{ type: string; magic: number[] }> = [
  { type: 'image/png', magic: [0x89, 0x50, 0x4e, 0x47] },
  { type: 'image/jpeg', magic: [0xff, 0xd8, 0xff] },
  { type: 'image/bmp', magic: [0x42, 0x4d] },
  { type: 'image/tiff', magic: [0x49, 0x49, 0x2a, 0x00] },
  { type: 'image/tiff', magic: [0x4d, 0x4d, 0x00, 0x2a] },
  { type: 'image/gif', magic: [0x47, 0x49, 0x46, 0x38] },
];

/** The image type of a buffer, or null when it is not an image tesseract can read. */
export function sniffImageType(data: Buffer): string | null {
  const hit = FORMATS.find((f) => f.magic.every((byte, i) => data[i] === byte));
  return hit?.type ?? null;
}

/**
 * One tesseract worker, created on first use and reused; recognitions run one at a time (a
 * tesseract worker is single-threaded anyway). A failed recognition is a 422 for that image,
 * and the worker is replaced so one bad file cannot poison the next.
 */
export function createOcrEngine(): OcrEngine {
  let worker: Promise<Worker> | null = null;
  let queue: Promise<unknown> = Promise.resolve();
  const start = () => (worker ??= createWorker('eng', OEM.LSTM_ONLY, {
    langPath: ENG.langPath,
    gzip: ENG.gzip,
    cacheMethod: 'none',
    // Without a handler tesseract.js rethrows a failed job as an uncaught exception, which would
    // crash the process on one bad upload; the job's own rejection already carries the error.
    errorHandler: () => undefined,
  }));

  const run = async (image: Buffer): Promise<OcrResult> => {
    const w = await start();
    try {
      const { data } = await w.recognize(image);
      return { text: data.text.trim(), confidence: Math.round(data.confidence * 100) / 100 };
    } catch (err) {
      worker = null;
      await w.terminate().catch(() => undefined);
      throw new StranglerError(`the image could not be read (${err instanceof Error ? err.message : String(err)}); send a PNG, JPEG, TIFF, BMP or GIF scan`, 'UNPROCESSABLE');
    }
  };

  return {
    recognize(image) {
      const result = queue.then(() => run(image));
      queue = result.catch(() => undefined);
      return result;
    },
    async close() {
      const w = worker;
      worker = null;
      if (w) await (await w).terminate();
    },
  };
}
