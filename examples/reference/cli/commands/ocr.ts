import type { Argv, CommandModule } from 'yargs';
import { StranglerError } from '../../../../core/errors.ts';
import { createLogger } from '../../../../core/logger.ts';
import { resolveCliConfig, type GlobalArgs, untilSignal } from '../../../../cli/context.ts';

interface OcrArgs extends GlobalArgs {
  action: 'worker';
  concurrency: number;
  lockMs: number;
}

/** `reference ocr worker`: OCR workers as a separate process (on other machines in production). */
export const ocrCommand: CommandModule<GlobalArgs, OcrArgs> = {
  command: 'ocr <action>',
  describe: 'worker: run OCR workers on the job queue (BullMQ on the strangler Redis)',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .positional('action', { choices: ['worker'] as const, demandOption: true })
      .option('concurrency', { type: 'number', default: 1, describe: 'jobs read at once (one tesseract engine each)' })
      .option('lock-ms', { type: 'number', default: 30_000, describe: 'a job held by a worker that stopped renewing its lock this long goes to another worker' }) as unknown as Argv<OcrArgs>,
  handler: async (args) => {
    if (!Number.isInteger(args.concurrency) || args.concurrency < 1 || args.concurrency > 32) throw new StranglerError(`--concurrency must be 1-32, got ${args.concurrency}`, 'BAD_INPUT');
    const config = await resolveCliConfig(args);
    const { serviceByName } = await import('../../../../core/config/load.ts');
    const service = serviceByName(config, 'ocr');
    const { migrateService } = await import('../../migrations/services/index.ts');
    await migrateService(service);
    const { openDatabase } = await import('../../monolith/db.ts');
    const { startOcrWorker } = await import('../../services/ocr/queue.ts');
    const db = openDatabase(service.databaseUrl, args.concurrency + 2);
    const workers = startOcrWorker(config, db, createLogger('ocr-worker', config.logLevel), { concurrency: args.concurrency, lockDurationMs: args.lockMs });
    await workers.worker.waitUntilReady();
    process.stderr.write(`ocr worker ready (concurrency ${args.concurrency})\n`);
    await untilSignal();
    await workers.close();
    await db.destroy();
    process.exit(0);
  },
};
