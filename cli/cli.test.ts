import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
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
  });

  it('reports a valid config with its services in migration order', async () => {
    const r = await run('config', 'check', '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).services).toEqual(['auth', 'invoices', 'templates', 'ocr', 'analytics', 'chat']);
  });
});
