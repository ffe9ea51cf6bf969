import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..');
const run = async (...args: string[]) => {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [resolve(ROOT, 'bin/strangler.js'), ...args], { cwd: ROOT });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
};

describe('the strangler command', () => {
  it('prints its commands with --help', async () => {
    const r = await run('--help');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/strangler dev <action>/);
  });

  it('loads neither the config schema, the YAML parser, the logger nor a database driver for --help', async () => {
    // Start-up (issue 23): those load inside the handlers that need them. What loads is the
    // measure here, not how long it takes (that is `npm run bench:cli`).
    const trace = join(mkdtempSync(join(tmpdir(), 'cli-trace-')), 'modules.txt');
    writeFileSync(trace, '');
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', resolve(ROOT, 'test/fixtures/module-trace.mjs'), resolve(ROOT, 'bin/strangler.js'), '--help'], {
      cwd: ROOT,
      env: { ...process.env, MODULE_TRACE_FILE: trace },
    });
    expect(stdout).toMatch(/strangler sync <action>/);
    const loaded = readFileSync(trace, 'utf8').split('\n');
    expect(loaded.some((url) => url.includes('/node_modules/yargs/'))).toBe(true); // the trace works
    const heavy = loaded.filter((url) => /\/node_modules\/(zod|yaml|pino|pg|ioredis|undici|knex)\/|\/core\/(config\/load|config\/schema|logger|databases)\.ts$/.test(url));
    expect(heavy).toEqual([]);
  });

  it('exits 2 with the key path when strangler.yaml is invalid', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cli-'));
    writeFileSync(join(dir, 'bad.yaml'), 'gateway:\n  prot: 5000\n');
    const r = await run('config', 'check', '--config', join(dir, 'bad.yaml'));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('gateway.prot: unknown key; did you mean "port"?');
  });

  it('exits 2 on an unknown command, pointing at --help', async () => {
    const r = await run('frobnicate');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Unknown argument: frobnicate/);
  });

  it('refuses bad gateway flags before starting anything, saying what to do', async () => {
    const workers = await run('gateway', '--workers', '0');
    expect(workers.code).toBe(2);
    expect(workers.stderr).toContain('--workers must be an integer from 1 to 64, got 0');
    const zone = await run('gateway', '--zone', ' ');
    expect(zone.code).toBe(2);
    expect(zone.stderr).toContain('--zone must not be empty; leave it out for no zone preference');
    for (const command of ['gateway', 'haproxy', 'ui']) {
      const port = await run(command, '--port', '70000');
      expect(port.code, command).toBe(2);
      expect(port.stderr, command).toContain('--port must be a whole number from 0 to 65535, got 70000');
    }
  });

  it('reports a valid config with its services in migration order', async () => {
    const r = await run('config', 'check', '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).services).toEqual(['auth', 'invoices', 'templates', 'ocr', 'analytics', 'chat']);
  });
});
