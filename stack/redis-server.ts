import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StranglerError } from '../core/errors.ts';
import { freePort, isListening, waitFor } from './ports.ts';
import { onProcessExit, reapWithParent } from './reaper.ts';

export interface RedisServerOptions {
  port?: number;
  /** Path of the redis-server binary (default: from PATH). */
  binary?: string;
}

/** A private, non-persistent redis-server on 127.0.0.1, which the harness can stop, kill and restart. */
export class RedisServer {
  readonly port: number;
  state: 'created' | 'running' | 'stopped' = 'created';
  private child: ChildProcess | null = null;
  private readonly dir: string;
  private readonly binary: string;
  private removeExitHook: (() => void) | null = null;

  private constructor(port: number, binary: string) {
    this.port = port;
    this.binary = binary;
    this.dir = mkdtempSync(join(tmpdir(), 'strangler-redis-'));
  }

  /** The server's process id while it runs (dev down kills it when its owner cannot stop it). */
  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  static async start(options: RedisServerOptions = {}): Promise<RedisServer> {
    const server = new RedisServer(options.port ?? (await freePort()), options.binary ?? 'redis-server');
    await server.startServer();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async stop(): Promise<void> {
    await this.signalAndWait('SIGTERM');
  }

  async kill(): Promise<void> {
    await this.signalAndWait('SIGKILL');
  }

  /** Freezes the server (SIGSTOP): it keeps its connections and its port, and answers nothing. */
  pause(): void {
    if (this.state === 'running' && this.child?.pid) process.kill(this.child.pid, 'SIGSTOP');
  }

  /** Lets a paused server go on (SIGCONT). */
  resume(): void {
    if (this.child?.pid) process.kill(this.child.pid, 'SIGCONT');
  }

  async restart(): Promise<void> {
    if (this.state === 'running') await this.stop();
    await this.startServer();
  }

  async destroy(): Promise<void> {
    await this.stop();
    this.removeExitHook?.();
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async startServer(): Promise<void> {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir, '--daemonize', 'no', '--loglevel', 'warning'];
    const child = spawn(this.binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let failure = '';
    child.stderr?.on('data', (c: Buffer) => (failure += c.toString()));
    child.once('error', (err) => (failure = err.message));
    child.unref();
    (child.stderr as unknown as { unref?: () => void })?.unref?.();
    this.child = child;
    if (child.pid) reapWithParent(child.pid, 'KILL');
    this.removeExitHook?.();
    this.removeExitHook = onProcessExit(() => {
      if (this.state === 'running' && this.child?.pid) {
        try {
          process.kill(this.child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    });
    try {
      await waitFor(`redis-server on port ${this.port}`, async () => {
        if (child.exitCode !== null || failure.includes('ENOENT')) throw new Error(failure || 'exited');
        return isListening(this.port);
      }, 15_000, 30);
    } catch (err) {
      const missing = /ENOENT/.test(String((err as Error).message));
      throw new StranglerError(
        missing
          ? 'redis-server not found on PATH; run: apt-get install -y redis-server  (or set REDIS_URL to a Redis you run)'
          : `redis-server did not start on port ${this.port}: ${(err as Error).message}`,
        'STACK_FAILED',
      );
    }
    this.state = 'running';
  }

  private async signalAndWait(signal: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child || this.state !== 'running') return;
    const gone = new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
    try {
      process.kill(child.pid!, signal);
      process.kill(child.pid!, 'SIGCONT'); // a paused server takes its SIGTERM only once it runs
    } catch {
      // already gone
    }
    await Promise.race([gone, new Promise((r) => setTimeout(r, 10_000))]);
    this.state = 'stopped';
    this.child = null;
  }
}
