import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { StranglerError } from '../core/errors.ts';
import { findPostgresBinaries } from './postgres-binaries.ts';
import { freePort, waitFor } from './ports.ts';
import { onProcessExit, reapWithParent } from './reaper.ts';

export interface PostgresClusterOptions {
  /** Port to listen on; a free one when omitted. */
  port?: number;
  /** Data folder; a fresh temporary one (removed on stop) when omitted. */
  dataDir?: string;
  /** Faster settings for tests (fsync off: safe against a process crash, not a machine crash). */
  ephemeral?: boolean;
  /** Extra `-c name=value` server settings. */
  settings?: Record<string, string | number>;
}

export type ClusterState = 'created' | 'running' | 'stopped';

/**
 * A private PostgreSQL cluster with logical replication enabled, on 127.0.0.1.
 * As root, initdb and the server run as the `postgres` user in a folder that user owns.
 */
export class PostgresCluster {
  readonly port: number;
  readonly dataDir: string;
  state: ClusterState = 'created';
  private readonly ownsDataDir: boolean;
  private readonly binDir: string;
  private readonly settings: Record<string, string | number>;
  private child: ChildProcess | null = null;
  private removeExitHook: (() => void) | null = null;
  private readonly runAs: { uid: number; gid: number } | null;

  private constructor(port: number, dataDir: string, ownsDataDir: boolean, options: PostgresClusterOptions) {
    this.port = port;
    this.dataDir = dataDir;
    this.ownsDataDir = ownsDataDir;
    this.binDir = findPostgresBinaries().binDir;
    this.runAs = process.getuid?.() === 0 ? postgresUser() : null;
    this.settings = {
      wal_level: 'logical',
      max_replication_slots: 32,
      max_wal_senders: 32,
      max_logical_replication_workers: 16,
      max_worker_processes: 32,
      max_connections: 300,
      track_commit_timestamp: 'on',
      listen_addresses: '127.0.0.1',
      unix_socket_directories: dataDir,
      port,
      // fsync off survives a process crash (the kernel has the WAL), only a machine crash loses data;
      // synchronous_commit stays on so a SIGKILLed server keeps every commit it acknowledged.
      ...(options.ephemeral ? { fsync: 'off', full_page_writes: 'off' } : {}),
      ...options.settings,
    };
  }

  /** Creates (initdb) and starts a cluster. */
  static async start(options: PostgresClusterOptions = {}): Promise<PostgresCluster> {
    const port = options.port ?? (await freePort());
    const owns = !options.dataDir;
    const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'strangler-pg-'));
    const cluster = new PostgresCluster(port, dataDir, owns, options);
    cluster.initdb();
    await cluster.startServer();
    return cluster;
  }

  /** Superuser URL of a database on this cluster. */
  url(database = 'postgres'): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }

  /** URL of the cluster without a database (what strangler.yaml's postgres.url takes). */
  /** The server's process id while it runs (dev down kills it when its owner cannot stop it). */
  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  get baseUrl(): string {
    return `postgres://postgres@127.0.0.1:${this.port}`;
  }

  async createDatabase(name: string): Promise<void> {
    await this.admin(async (c) => {
      const exists = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
      if (!exists.rowCount) await c.query(`CREATE DATABASE ${quoteIdent(name)}`);
    });
  }

  async dropDatabase(name: string): Promise<void> {
    await this.admin((c) => c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`));
  }

  /** Fast shutdown (SIGINT): disconnects clients, checkpoints, exits. */
  async stop(): Promise<void> {
    await this.signalAndWait('SIGINT');
  }

  /**
   * Freezes the whole server (SIGSTOP to the postmaster and every backend): connections stay
   * open and nothing answers, as on a hung host or behind a network black hole.
   */
  pause(): void {
    this.signalAll('SIGSTOP');
  }

  /** Lets a paused server go on (SIGCONT). */
  resume(): void {
    this.signalAll('SIGCONT');
  }

  private signalAll(signal: NodeJS.Signals): void {
    for (const pid of this.processes()) {
      try {
        process.kill(pid, signal);
      } catch {
        // a backend that exited meanwhile
      }
    }
  }

  /** The postmaster and its children (backends, walsenders, background workers). */
  private processes(): number[] {
    const root = this.child?.pid;
    if (!root || this.state !== 'running') return [];
    const pids = [root];
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        // /proc/<pid>/stat: pid (comm) state ppid …; comm may hold spaces, so read after its ')'.
        const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
        if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === root) pids.push(Number(entry));
      } catch {
        // gone meanwhile
      }
    }
    return pids;
  }

  /** Immediate death (SIGKILL of the postmaster), as a crash would be. */
  async kill(): Promise<void> {
    await this.signalAndWait('SIGKILL');
  }

  async restart(): Promise<void> {
    if (this.state === 'running') await this.stop();
    for (let attempt = 1; ; attempt++) {
      try {
        await this.startServer();
        return;
      } catch (err) {
        if (attempt >= 5) throw err;
        await new Promise((r) => setTimeout(r, 500 * attempt));
      }
    }
  }

  /** Stops the server and removes its folder when the harness created it. */
  async destroy(): Promise<void> {
    await this.stop();
    this.removeExitHook?.();
    if (this.ownsDataDir) rmSync(this.dataDir, { recursive: true, force: true });
  }

  private initdb(): void {
    if (existsSync(join(this.dataDir, 'PG_VERSION'))) return;
    if (this.runAs) chownSync(this.dataDir, this.runAs.uid, this.runAs.gid);
    try {
      execFileSync(
        join(this.binDir, 'initdb'),
        ['-D', this.dataDir, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-sync'],
        { stdio: ['ignore', 'pipe', 'pipe'], ...(this.runAs ?? {}) },
      );
    } catch (err) {
      const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? '';
      throw new StranglerError(`initdb failed in ${this.dataDir}: ${stderr.trim() || (err as Error).message}`, 'STACK_FAILED');
    }
    appendFileSync(join(this.dataDir, 'pg_hba.conf'), '\nhost replication all 127.0.0.1/32 trust\n');
  }

  private async startServer(): Promise<void> {
    const args = ['-D', this.dataDir];
    for (const [k, v] of Object.entries(this.settings)) args.push('-c', `${k}=${v}`);
    const logFile = join(this.dataDir, 'server.log');
    writeFileSync(logFile, '');
    if (this.runAs) chownSync(logFile, this.runAs.uid, this.runAs.gid);
    const child = spawn(join(this.binDir, 'postgres'), args, {
      stdio: ['ignore', 'ignore', 'pipe'],
      ...(this.runAs ?? {}),
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      try {
        appendFileSync(logFile, chunk);
      } catch {
        // the folder is gone (destroyed while the server wrote its last lines)
      }
    });
    child.unref();
    (child.stderr as unknown as { unref?: () => void })?.unref?.();
    this.child = child;
    if (child.pid) reapWithParent(child.pid, 'INT');
    this.removeExitHook?.();
    this.removeExitHook = onProcessExit(() => {
      if (this.state === 'running' && this.child?.pid) {
        try {
          process.kill(this.child.pid, 'SIGINT');
        } catch {
          // already gone
        }
      }
    });
    let exited = false;
    child.once('exit', () => {
      exited = true;
    });
    try {
      await waitFor(`PostgreSQL on port ${this.port}`, async () => {
        if (exited) throw new Error('server exited');
        return this.canConnect();
      }, 30_000, 50);
    } catch (err) {
      const log = existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').slice(-15).join('\n') : '';
      throw new StranglerError(`PostgreSQL did not start on port ${this.port}: ${(err as Error).message}\n${log}`, 'STACK_FAILED');
    }
    this.state = 'running';
  }

  private async canConnect(): Promise<boolean> {
    const client = new pg.Client({ connectionString: this.url(), connectionTimeoutMillis: 1000 });
    try {
      await client.connect();
      await client.query('SELECT 1');
      return true;
    } catch {
      return false;
    } finally {
      await client.end().catch(() => undefined);
    }
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
    } catch {
      // already gone
    }
    // A paused server takes its signal only once it runs again.
    if (signal !== 'SIGKILL') this.signalAll('SIGCONT');
    await Promise.race([gone, new Promise((r) => setTimeout(r, 15_000))]);
    this.state = 'stopped';
    this.child = null;
    if (signal === 'SIGKILL') await this.waitForOrphanBackends();
  }

  /**
   * After a SIGKILL the orphaned backends notice the postmaster's death and exit within moments;
   * until then a new postmaster refuses the still-attached shared memory. Give them that moment.
   */
  private async waitForOrphanBackends(): Promise<void> {
    await new Promise((r) => setTimeout(r, 300));
  }

  private async admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
    const client = new pg.Client({ connectionString: this.url() });
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.end();
    }
  }
}

function postgresUser(): { uid: number; gid: number } {
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    return { uid, gid };
  } catch {
    throw new StranglerError(
      'running as root, but there is no "postgres" user to run initdb and the server as; run: apt-get install -y postgresql (it creates the user), or run as a normal user',
      'STACK_FAILED',
    );
  }
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
