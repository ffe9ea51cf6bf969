import type { ResolvedConfig, ResolvedService } from '../../core/config/load.ts';
import type { Logger } from '../../core/logger.ts';
import { feedsOf } from './plan.ts';
import { SyncWorker } from './worker.ts';

export interface RunningFeeds {
  workers(): SyncWorker[];
  stop(): Promise<void>;
}

/**
 * The feeds of a service's copies, one per owning service: run beside its forward sync (its
 * `strangler sync start`). A feed whose owner's database is not ready yet (the owner's service
 * has not migrated it) is retried every `retryMs` until it starts.
 */
export function startFeeds(config: ResolvedConfig, service: ResolvedService, logger: Logger, retryMs = 5_000): RunningFeeds {
  const owners = config.services.filter((owner) => feedsOf([service], owner).length > 0);
  const running: SyncWorker[] = [];
  let stopped = false;
  const timers = new Set<NodeJS.Timeout>();
  const attempt = async (owner: ResolvedService): Promise<void> => {
    if (stopped) return;
    const worker = new SyncWorker({ config, service, feedFrom: owner, logger, waitForLock: true });
    try {
      await worker.start();
      if (stopped) return void (await worker.stop());
      running.push(worker);
      logger.info({ owner: owner.name, slot: worker.plan?.slot }, `feed from ${owner.name} running (${worker.plan?.tables.map((t) => t.target).join(', ')})`);
    } catch (err) {
      logger.warn({ err, owner: owner.name }, `feed from ${owner.name} cannot start yet; retrying`);
      const timer = setTimeout(() => {
        timers.delete(timer);
        void attempt(owner);
      }, retryMs);
      timers.add(timer);
    }
  };
  for (const owner of owners) void attempt(owner);
  return {
    workers: () => [...running],
    async stop() {
      stopped = true;
      for (const t of timers) clearTimeout(t);
      await Promise.all(running.map((w) => w.stop()));
    },
  };
}
