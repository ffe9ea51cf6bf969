import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { SignJWT } from 'jose';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { generateSecret } from '../../core/config/secrets.ts';
import { freePort, waitFor } from '../../stack/ports.ts';
import { createTestDatabase, dropTestDatabase, ROOT, sharedStack, uniqueName } from '../../test/harness.ts';

/**
 * Issue 20, item 8: a monolith in another language, migrated with the CLI alone. A Flask
 * monolith (app.py: accounts and notes, Flask-JWT-Extended-style tokens without `iss`, no
 * /health) and a separately written notes service (notes_service.py: its own database, a plain
 * `serial` key, its health at /status) run as plain processes; every strangler step is a
 * `bin/strangler.js -c <config>` process: control init, gateway, doctor, sync start both ways,
 * verify, cutover --sync/--shadow/--canary/--full, rollback, while several clients write notes
 * through the gateway. No acknowledged write may be missing: from the service's database once
 * switched, from the monolith's after the rollback.
 */
const HERE = import.meta.dirname;
const MODULES = 'import flask, psycopg2, jwt';

/** A python3 that has Flask, psycopg2 and PyJWT (Debian's, when another python3 comes first on PATH). */
function findPython(): string | null {
  for (const py of ['/usr/bin/python3', 'python3']) {
    try {
      execFileSync(py, ['-c', MODULES], { stdio: 'ignore' });
      return py;
    } catch {
      // not this one
    }
  }
  return null;
}
const python = findPython();
const isRoot = process.getuid?.() === 0;
// Missing modules fail the run where CI could have installed them (.ci/run, as root), and skip only where it could not.
const skip = !python && !isRoot;
if (skip) console.warn('flask.scenario: skipped: python3 with flask, psycopg2 and jwt not found; install python3-flask python3-psycopg2 python3-jwt (apt-get) or run .ci/run as root');

const dir = mkdtempSync(join(tmpdir(), 'flask-example-'));
const configFile = join(dir, 'strangler.yaml');
const secret = generateSecret();
const adminToken = generateSecret();
const env = { ...process.env, STRANGLER_LEGACY_JWT_SECRET: secret, STRANGLER_ADMIN_TOKEN: adminToken, STRANGLER_ACTOR: 'flask-example' };
const children: ChildProcess[] = [];
let legacyDb = '';
let notesDb = '';
let controlDb = '';
let gatewayUrl = '';

/** One strangler command to its end: exit code and output. */
async function strangler(...args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [resolve(ROOT, 'bin/strangler.js'), ...args, '-c', configFile], { env, timeout: 120_000 });
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, out: `${e.stdout}${e.stderr}` };
  }
}

/** A strangler command repeated until it succeeds (a preflight waiting on traffic); on timeout, the last refusal. */
async function until(what: string, ...args: string[]): Promise<{ code: number; out: string }> {
  let last = { code: -1, out: '' };
  try {
    await waitFor(what, async () => (last = await strangler(...args)).code === 0, 120_000, 1_000);
  } catch (err) {
    throw new Error(`${(err as Error).message}; last answer:\n${last.out}`);
  }
  return last;
}

/** A long-running process (the monolith, the service, the gateway, a sync worker), up once `ready` shows in its output. */
async function start(what: string, cmd: string, args: string[], ready: RegExp | (() => Promise<boolean>), extraEnv: Record<string, string> = {}): Promise<ChildProcess> {
  const child = spawn(cmd, args, { env: { ...env, ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (c) => (out += c));
  child.stderr!.on('data', (c) => (out += c));
  const exited = new Promise<never>((_, fail) => child.once('exit', (code) => fail(new Error(`${what} exited with ${code}:\n${out}`))));
  const up = typeof ready === 'function' ? waitFor(what, ready, 60_000, 100) : waitFor(what, async () => ready.test(out), 60_000, 100);
  await Promise.race([up, exited]);
  exited.catch(() => undefined);
  return child;
}

const cli = (...args: string[]) => [resolve(ROOT, 'bin/strangler.js'), ...args, '-c', configFile];
const httpOk = (url: string) => () => fetch(url).then((r) => r.ok, () => false);

async function count(url: string, ids: number[]): Promise<number> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(`SELECT count(*)::int AS n FROM notes WHERE id = ANY($1)`, [ids])).rows[0].n;
  } finally {
    await c.end();
  }
}

/**
 * Clients through the gateway, one account each. Writers create a note and read it back (a note
 * never changes, so a shadowed read that races the sync settles on recheck); readers list their
 * own notes, which nobody changes (a writer's list read while it goes on writing would differ
 * between the two sides by its next note: a race of the test, not a difference of the service).
 */
function startClients(tokens: string[], readers: string[]) {
  const acknowledged: number[] = [];
  const statuses: Record<number, number> = {};
  let stop = false;
  const loops = tokens.map(async (token, w) => {
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    for (let i = 0; !stop; i++) {
      try {
        const res = await fetch(`${gatewayUrl}/api/notes`, { method: 'POST', headers, body: JSON.stringify({ title: `w${w} n${i}`, body: 'written through the gateway' }) });
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        if (res.status === 201) {
          const note = (await res.json()) as { id: number };
          acknowledged.push(note.id);
          await (await fetch(`${gatewayUrl}/api/notes/${note.id}`, { headers })).arrayBuffer();
        } else await res.arrayBuffer();
      } catch {
        statuses[-1] = (statuses[-1] ?? 0) + 1;
      }
    }
  });
  const reads = readers.map(async (token) => {
    while (!stop) {
      const res = await fetch(`${gatewayUrl}/api/notes`, { headers: { authorization: `Bearer ${token}` } }).catch(() => null);
      await res?.arrayBuffer();
      if (res) statuses[res.status] = (statuses[res.status] ?? 0) + 1;
    }
  });
  return {
    acknowledged,
    statuses,
    /** Waits until `n` more writes are acknowledged. */
    async more(n: number) {
      const target = acknowledged.length + n;
      await waitFor(`${n} more acknowledged writes`, async () => acknowledged.length >= target, 60_000, 50);
    },
    async stop() {
      stop = true;
      await Promise.all([...loops, ...reads]);
    },
  };
}

beforeAll(async () => {
  if (skip) return;
  if (!python) throw new Error('python3 with flask, psycopg2 and jwt not found; install python3-flask python3-psycopg2 python3-jwt (.ci/run does, as root)');
  const { pgBaseUrl, redisUrl } = sharedStack();
  legacyDb = await createTestDatabase('flask_legacy');
  notesDb = await createTestDatabase('flask_notes');
  controlDb = `${pgBaseUrl}/${uniqueName('flask_control')}`; // made by `strangler control init`
  const [legacyPort, notesPort, gatewayPort] = [await freePort(), await freePort(), await freePort()];
  gatewayUrl = `http://127.0.0.1:${gatewayPort}`;

  // The example's strangler.yaml, pointed at this run's private stack and ports.
  const yaml = parse(readFileSync(join(HERE, 'strangler.yaml'), 'utf8'));
  yaml.postgres.url = pgBaseUrl;
  yaml.redis = { url: redisUrl, keyPrefix: `${uniqueName('flask')}:` };
  Object.assign(yaml.legacy, { port: legacyPort, database: legacyDb });
  yaml.control.database = controlDb;
  Object.assign(yaml.gateway, { port: gatewayPort, snapshotFile: join(dir, 'routes.json'), pollIntervalMs: 200, heartbeatIntervalMs: 200 });
  Object.assign(yaml.services[0], { port: notesPort, database: notesDb });
  yaml.logLevel = 'warn';
  writeFileSync(configFile, stringify(yaml));

  await start('the Flask monolith', python, [join(HERE, 'app.py')], httpOk(`http://127.0.0.1:${legacyPort}/`), { DATABASE_URL: legacyDb, JWT_SECRET_KEY: secret, PORT: String(legacyPort) });
  await start('the notes service', python, [join(HERE, 'notes_service.py')], httpOk(`http://127.0.0.1:${notesPort}/status`), { DATABASE_URL: notesDb, JWT_SECRET_KEY: secret, PORT: String(notesPort) });
}, 180_000);

afterAll(async () => {
  for (const c of children.reverse()) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    c.kill('SIGTERM');
    await new Promise((r) => {
      const t = setTimeout(() => (c.kill('SIGKILL'), r(null)), 10_000);
      c.once('exit', () => (clearTimeout(t), r(null)));
    });
  }
  if (!skip) await strangler('sync', 'cleanup', 'notes');
  for (const db of [notesDb, legacyDb, controlDb]) if (db) await dropTestDatabase(db).catch(() => undefined);
});

describe.skipIf(skip)('the Flask example: a foreign monolith migrated with the CLI alone (issue 20, item 8)', () => {
  it('moves /api/notes to the notes service and back under concurrent writes, losing none', async () => {
    const init = await strangler('control', 'init');
    expect(init.code, init.out).toBe(0);
    expect(init.out).toMatch(/control database created/);
    await start('the gateway', process.execPath, cli('gateway'), /listening on/);

    // Accounts register on the monolith through the gateway; its tokens carry no iss.
    const tokens: string[] = [];
    for (let i = 0; i < 10; i++) {
      const res = await fetch(`${gatewayUrl}/api/auth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: `writer${i}@example.test`, password: 'correct horse battery' }) });
      expect(res.status).toBe(201);
      tokens.push(((await res.json()) as { access_token: string }).access_token);
    }
    const claims = JSON.parse(Buffer.from(tokens[0].split('.')[1], 'base64url').toString());
    expect(claims).not.toHaveProperty('iss');
    expect(claims).toMatchObject({ type: 'access', sub: expect.any(String) });
    // Accepted at the edge without iss; a token signed with another key is refused there.
    expect((await fetch(`${gatewayUrl}/api/notes`, { headers: { authorization: `Bearer ${tokens[0]}` } })).status).toBe(200);
    const forged = await new SignJWT({ type: 'access' }).setProtectedHeader({ alg: 'HS256' }).setSubject('1').setExpirationTime('1h').sign(new TextEncoder().encode(generateSecret()));
    const refused = await fetch(`${gatewayUrl}/api/notes`, { headers: { authorization: `Bearer ${forged}` } });
    expect(refused.status).toBe(401);
    expect(refused.headers.get('content-type')).toMatch(/json/);

    // Two readers with notes of their own, written before the migration starts.
    for (const token of tokens.slice(8)) {
      for (let n = 0; n < 3; n++) expect((await fetch(`${gatewayUrl}/api/notes`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ title: `kept ${n}` }) })).status).toBe(201);
    }
    const writers = startClients(tokens.slice(0, 8), tokens.slice(8));
    try {
      await writers.more(20);
      // The monolith has no /health: its health check is the index page, and `strangler services` says healthy.
      await waitFor('strangler services to show legacy healthy', async () => {
        const s = await strangler('services', '--json');
        const legacy = (JSON.parse(s.out) as Array<{ service: string; available: number }>).find((x) => x.service === 'legacy');
        return legacy?.available === 1;
      }, 30_000, 500);
      const doctor = await strangler('doctor');
      expect(doctor.out).toMatch(/ids notes\.notes/);

      // The service made its own table with serial ids from 1: sync start refuses, saying what to run...
      const collide = await strangler('sync', 'start', 'notes');
      expect(collide.code).not.toBe(0);
      expect(collide.out).toMatch(/could collide with the monolith's[\s\S]*ALTER SEQUENCE public\.notes_id_seq MINVALUE 1000000001/);
      // ...and moves them above the monolith's with --fix-sequences.
      await start('the forward sync', process.execPath, cli('sync', 'start', 'notes', '--fix-sequences'), /streaming from slot/);
      const verify = await strangler('sync', 'verify', 'notes');
      expect(verify.code, verify.out).toBe(0);
      expect((await strangler('cutover', '/api/notes', '--sync')).code).toBe(0);
      await start('the reverse sync', process.execPath, cli('sync', 'start', 'notes', '--reverse'), /streaming from slot/);

      const shadow = await strangler('cutover', '/api/notes', '--shadow');
      expect(shadow.code, shadow.out).toBe(0);
      // The preflight asked the service at /status, as the gateway does.
      expect(shadow.out).toMatch(/service-health: notes answered http:\/\/127\.0\.0\.1:\d+\/status/);
      await writers.more(40);
      const canary = await until('the canary preflight to pass (shadow comparisons gathered)', 'cutover', '/api/notes', '--canary', '50');
      expect(canary.out).toMatch(/id-ranges: notes: ids from the service's own range/);
      await writers.more(60);
      await until('the switch preflight to pass (canary analysis)', 'cutover', '/api/notes', '--full');

      await writers.more(30);
      const switched = [...writers.acknowledged];
      await waitFor('every acknowledged write in the service database', async () => (await count(notesDb, switched)) === switched.length, 30_000, 200);
      expect(switched.some((id) => id > 1_000_000_000), 'the service created notes in its own range').toBe(true);

      const back = await strangler('rollback', '/api/notes', '--reason', 'flask example: back to the monolith');
      expect(back.code, back.out).toBe(0);
      await writers.more(20);
    } finally {
      await writers.stop();
    }
    const all = [...writers.acknowledged];
    expect(new Set(all).size).toBe(all.length);
    // The rollback drained the reverse sync: every write the service took is in the monolith's database.
    await waitFor('every acknowledged write in the monolith database', async () => (await count(legacyDb, all)) === all.length, 30_000, 200);
    expect(await count(legacyDb, all)).toBe(all.length);
    console.info(`flask example: ${all.length} writes acknowledged (${all.filter((id) => id > 1_000_000_000).length} by the service), statuses ${JSON.stringify(writers.statuses)}, none lost`);
  });
});
