import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { StranglerError } from '../../core/errors.ts';
import type { RenderedHaproxy } from './render-config.ts';
import { runtimeCommand } from './runtime-api.ts';

export interface HaproxyProcess {
  pid: number;
  socket: string;
  /** Resolves when the process has exited (for whatever reason). */
  exited: Promise<number | null>;
  stop(): Promise<void>;
}

/** Writes the rendered files (owner-only: haproxy.cfg holds the admin token and HMAC secrets). */
export function writeRendered(runDir: string, rendered: RenderedHaproxy): void {
  mkdirSync(runDir, { recursive: true, mode: 0o700 });
  for (const [name, content] of Object.entries(rendered.files)) {
    const file = join(runDir, name);
    writeFileSync(file, content, { mode: 0o600 });
    chmodSync(file, 0o600);
  }
}

/**
 * Checks the configuration (haproxy -c), then runs HAProxy in the foreground (-db) and waits until
 * its Runtime API answers. Its output goes to `onOutput`.
 */
export async function runHaproxy(binary: string, rendered: RenderedHaproxy, onOutput: (line: string) => void = () => undefined): Promise<HaproxyProcess> {
  try {
    await promisify(execFile)(binary, ['-c', '-q', '-f', rendered.cfgFile]);
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new StranglerError(`${binary} not found: install HAProxy 2.6 or later (apt-get install haproxy) or set gateway.haproxy.binary`, 'CONFIG_INVALID');
    throw new StranglerError(`HAProxy refused the rendered ${rendered.cfgFile}: ${(e.stderr ?? e.message).trim()}`, 'CONFIG_INVALID');
  }
  const child: ChildProcess = spawn(binary, ['-db', '-f', rendered.cfgFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  for (const stream of [child.stdout, child.stderr]) stream?.setEncoding('utf8').on('data', (d: string) => d.split('\n').filter(Boolean).forEach(onOutput));
  const deadline = Date.now() + 10_000;
  let exitCode: number | null | undefined;
  void exited.then((c) => (exitCode = c));
  for (;;) {
    if (exitCode !== undefined) throw new StranglerError(`HAProxy exited (code ${exitCode}) before its Runtime API answered; see its output above`, 'INTERNAL');
    try {
      if ((await runtimeCommand(rendered.socket, 'show info', 1_000)).includes('Pid:')) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new StranglerError(`HAProxy's Runtime API (${rendered.socket}) did not answer within 10 s`, 'INTERNAL');
    }
    await new Promise((ok) => setTimeout(ok, 50));
  }
  let stopping: Promise<void> | null = null;
  return {
    pid: child.pid!,
    socket: rendered.socket,
    exited,
    stop() {
      stopping ??= (async () => {
        if (exitCode !== undefined) return;
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      })();
      return stopping;
    },
  };
}
