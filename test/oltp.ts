/**
 * An OLTP workload on a schema the project did not write: pgbench's (accounts, tellers,
 * branches; pgbench_history has no key and is left out of every pipeline) plus a key-value
 * table for single-row inserts and deletes. Used by the sync's crash scenarios and its bench.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { findPostgresBinaries } from '../stack/postgres-binaries.ts';

/** The tables a "bank" service maps, with their key column. */
export const BANK_TABLES = [
  { table: 'pgbench_accounts', key: 'aid' },
  { table: 'pgbench_tellers', key: 'tid' },
  { table: 'pgbench_branches', key: 'bid' },
  { table: 'bank_kv', key: 'id' },
] as const;

/** A service mapping of the bank tables (for a ResolvedService's `tables`). */
export function bankTables() {
  return BANK_TABLES.map((t) => ({ source: t.table, target: t.table, columns: {}, exclude: [], replica: false }));
}

function connectionArgs(url: string): { args: string[]; database: string } {
  const u = new URL(url);
  return { args: ['-h', u.hostname, '-p', u.port || '5432', '-U', decodeURIComponent(u.username || 'postgres')], database: u.pathname.slice(1) };
}

function run(binary: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  return new Promise((ok, fail) => {
    const child = spawn(join(findPostgresBinaries().binDir, binary), args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.once('error', fail);
    child.once('exit', (code) => (code === 0 ? ok(out) : fail(new Error(`${binary} exited ${code}: ${out.slice(-2000)}`))));
  });
}

/** pgbench -i at `scale` (100,000 accounts each), its keys, and the key-value table with `kvRows` rows. */
export async function initBank(url: string, scale = 1, kvRows = 10_000): Promise<void> {
  const { args, database } = connectionArgs(url);
  await run('pgbench', [...args, '-i', '-q', '-s', String(scale), database]);
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(`CREATE TABLE bank_kv (id bigint PRIMARY KEY, v integer NOT NULL, note text)`);
    await c.query(`INSERT INTO bank_kv SELECT g, g % 1000, 'seed' FROM generate_series(1, $1::int) g`, [kvRows]);
  } finally {
    await c.end();
  }
}

/**
 * Scripts of one statement each (so one transaction each: back-to-back commits from every
 * client), plus a multi-table transaction. Weights as pgbench's `-f file@weight`.
 */
const SCRIPTS: Record<string, { weight: number; body: string }> = {
  update: { weight: 5, body: '\\set aid random(1, 100000 * :scale)\n\\set delta random(-5000, 5000)\nUPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;\n' },
  insert: { weight: 3, body: "\\set id random(1, 20000)\n\\set v random(1, 1000000)\nINSERT INTO bank_kv (id, v, note) VALUES (:id, :v, 'ins') ON CONFLICT (id) DO UPDATE SET v = excluded.v, note = 'upd';\n" },
  delete: { weight: 2, body: '\\set id random(1, 20000)\nDELETE FROM bank_kv WHERE id = :id;\n' },
  transfer: {
    weight: 1,
    body: '\\set tid random(1, 10 * :scale)\n\\set bid random(1, :scale)\n\\set delta random(-5000, 5000)\nBEGIN;\nUPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;\nUPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;\nCOMMIT;\n',
  },
};

export interface PgbenchRun {
  /** Resolves with pgbench's summary when it ends. */
  done: Promise<{ transactions: number; tps: number; output: string }>;
  stop(): void;
}

/** `clients` sessions committing small transactions back to back for `seconds` (or until stopped); `rate` caps tps. */
export function runBankLoad(url: string, options: { clients?: number; seconds: number; rate?: number; scripts?: Array<keyof typeof SCRIPTS> }): PgbenchRun {
  const dir = mkdtempSync(join(tmpdir(), 'oltp-'));
  const files = (options.scripts ?? (Object.keys(SCRIPTS) as Array<keyof typeof SCRIPTS>)).map((name) => {
    const file = join(dir, `${name}.sql`);
    writeFileSync(file, SCRIPTS[name].body);
    return ['-f', `${file}@${SCRIPTS[name].weight}`];
  });
  const { args, database } = connectionArgs(url);
  const clients = options.clients ?? 8;
  const argv = [...args, '-n', '-c', String(clients), '-j', String(Math.min(clients, 2)), '-T', String(options.seconds), ...(options.rate ? ['-R', String(options.rate)] : []), ...files.flat(), database];
  const child = spawn(join(findPostgresBinaries().binDir, 'pgbench'), argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const done = new Promise<{ transactions: number; tps: number; output: string }>((ok, fail) => {
    child.once('error', fail);
    child.once('exit', (code, signal) => {
      if (code !== 0 && signal !== 'SIGINT') return fail(new Error(`pgbench exited ${code ?? signal}: ${output.slice(-2000)}`));
      const transactions = Number(/number of transactions actually processed: (\d+)/.exec(output)?.[1] ?? 0);
      const tps = Number(/tps = ([\d.]+)/.exec(output)?.[1] ?? 0);
      ok({ transactions, tps, output });
    });
  });
  // Awaited by the caller, maybe only later: a failure is not unhandled meanwhile.
  done.catch(() => undefined);
  return { done, stop: () => child.kill('SIGINT') };
}

export interface TableDifference {
  table: string;
  sourceRows: number;
  targetRows: number;
  /** Keys whose rows differ or exist on one side only (at most 20). */
  keys: string[];
  differing: number;
}

/** Every row of each table compared by key (md5 of the row's text): the differences, [] when equal. */
export async function compareTables(sourceUrl: string, targetUrl: string, tables: ReadonlyArray<{ table: string; key: string }> = BANK_TABLES): Promise<TableDifference[]> {
  const rowsOf = async (url: string, table: string, key: string) => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      const { rows } = await c.query(`SELECT ${key}::text AS k, md5(t::text) AS h FROM ${table} t`);
      return new Map(rows.map((r) => [r.k as string, r.h as string]));
    } finally {
      await c.end();
    }
  };
  const out: TableDifference[] = [];
  for (const { table, key } of tables) {
    const [a, b] = await Promise.all([rowsOf(sourceUrl, table, key), rowsOf(targetUrl, table, key)]);
    const keys = new Set<string>();
    for (const [k, h] of a) if (b.get(k) !== h) keys.add(k);
    for (const k of b.keys()) if (!a.has(k)) keys.add(k);
    if (keys.size) out.push({ table, sourceRows: a.size, targetRows: b.size, keys: [...keys].slice(0, 20), differing: keys.size });
  }
  return out;
}
