import { spawn } from 'node:child_process';

/**
 * Child processes of the harness must not outlive it, even when the test runner is killed with
 * SIGKILL and no exit handler runs. A tiny detached shell watches our pid and kills the given
 * process group/pid when we are gone.
 */
export function reapWithParent(pid: number, signal: 'KILL' | 'TERM' | 'INT' = 'INT'): void {
  const script = `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; kill -${signal} ${pid} 2>/dev/null; sleep 5; kill -KILL ${pid} 2>/dev/null; exit 0`;
  const watcher = spawn('sh', ['-c', script], { detached: true, stdio: 'ignore' });
  watcher.unref();
}

type Cleanup = () => void;
const cleanups = new Set<Cleanup>();
let installed = false;

/** Runs synchronous cleanups on exit, SIGINT and SIGTERM (once). */
export function onProcessExit(cleanup: Cleanup): () => void {
  cleanups.add(cleanup);
  if (!installed) {
    installed = true;
    const runAll = () => {
      for (const fn of [...cleanups]) {
        try {
          fn();
        } catch {
          // best effort: we are exiting
        }
      }
      cleanups.clear();
    };
    process.once('exit', runAll);
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      process.on(sig, function reapOnSignal() {
        // An app with its own handler (dev up, the demo) stops gracefully and exits itself;
        // we only exit when nobody else listens, as Node would have done.
        if (process.listenerCount(sig) > 1) return;
        runAll();
        process.exit(sig === 'SIGINT' ? 130 : 143);
      });
    }
  }
  return () => cleanups.delete(cleanup);
}
