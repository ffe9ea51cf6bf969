import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import type { ResolvedConfig } from '../core/config/load.ts';
import { configYaml, ROOT } from './harness.ts';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

const BIN = resolve(ROOT, 'bin/strangler.js');

/** Writes a test config as strangler.yaml into `dir` and returns its path. */
export function writeConfig(dir: string, config: ResolvedConfig, name = 'strangler.yaml'): string {
  const file = join(dir, name);
  writeFileSync(file, stringify(configYaml(config)));
  return file;
}

/**
 * Runs the real `strangler` command (a process of its own) with a config file (null: none, the
 * command finds its own from `cwd`) and waits for it.
 * The timeout is generous: a loaded 2-core machine takes seconds to start one.
 */
export function runCli(configFile: string | null, args: string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {}): Promise<CliResult> {
  const config = configFile === null ? [] : ['--config', configFile];
  return new Promise((done, fail) => {
    execFile(process.execPath, [BIN, ...args, ...config], { timeout: options.timeoutMs ?? 60_000, cwd: options.cwd, env: { ...process.env, ...options.env } }, (err, stdout, stderr) => {
      const e = err as (Error & { code?: number | string; killed?: boolean }) | null;
      if (e?.killed) return fail(new Error(`strangler ${args.join(' ')} did not finish: ${stderr}`));
      done({ code: e ? Number(e.code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** Starts the real `strangler` command without waiting (to signal it); `result` settles when it exits. */
export function spawnCli(configFile: string, args: string[], options: { env?: NodeJS.ProcessEnv } = {}): { child: ChildProcess; result: Promise<CliResult & { signal: NodeJS.Signals | null }> } {
  const child = spawn(process.execPath, [BIN, ...args, '--config', configFile], { env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const result = new Promise<CliResult & { signal: NodeJS.Signals | null }>((done) => child.on('exit', (code, signal) => done({ code: code ?? -1, signal, stdout, stderr })));
  return { child, result };
}

/** Whether text holds a stack trace (expected faults are said in one line, without one). */
export function hasStackTrace(text: string): boolean {
  return /^\s+at .+\(?.+:\d+:\d+\)?$/m.test(text);
}
