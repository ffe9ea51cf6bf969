import pg from 'pg';
import type { ResolvedConfig } from '../../core/config/load.ts';
import { readSourceTables } from './catalog.ts';
import { serviceIdRanges } from './id-ranges.ts';
import { tableProblem, type SourceTable } from './plan.ts';

export interface DoctorFinding {
  check: string;
  ok: boolean;
  detail: string;
  /** What to change, when not ok. */
  fix?: string;
}

/**
 * Is the legacy database ready for logical replication? Reads only: it changes nothing.
 * Each finding says what to change, as the statement or setting to apply.
 */
export async function runDoctor(config: ResolvedConfig): Promise<DoctorFinding[]> {
  const client = new pg.Client({ connectionString: config.legacy.databaseUrl });
  await client.connect();
  try {
    const findings: DoctorFinding[] = [];
    const setting = async (name: string) => (await client.query(`SELECT current_setting($1) AS v`, [name])).rows[0].v as string;
    const wal = await setting('wal_level');
    findings.push({ check: 'wal_level', ok: wal === 'logical', detail: `wal_level is ${wal}`, fix: wal === 'logical' ? undefined : `ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL` });

    const commitTs = await setting('track_commit_timestamp');
    findings.push({
      check: 'track_commit_timestamp',
      ok: commitTs === 'on',
      detail: `track_commit_timestamp is ${commitTs} (rows written on both sides during a canary are detected as conflicts with it)`,
      fix: commitTs === 'on' ? undefined : 'ALTER SYSTEM SET track_commit_timestamp = on; then restart PostgreSQL',
    });

    const services = config.services.filter((s) => s.tables.length > 0);
    const needed = services.length * 2; // forward now, reverse (or a temporary slot) later
    const slots = Number(await setting('max_replication_slots'));
    const used = Number((await client.query(`SELECT count(*) AS n FROM pg_replication_slots`)).rows[0].n);
    const ours = Number((await client.query(`SELECT count(*) AS n FROM pg_replication_slots WHERE slot_name LIKE 'strangler\\_%'`)).rows[0].n);
    const free = slots - used;
    findings.push({
      check: 'replication slots',
      ok: free + ours >= services.length,
      detail: `${used} of ${slots} used (${ours} by strangler); ${services.length} pipelines need one each, ${needed} with headroom`,
      fix: free + ours >= services.length ? undefined : `ALTER SYSTEM SET max_replication_slots = ${used + needed}; then restart PostgreSQL`,
    });
    const senders = Number(await setting('max_wal_senders'));
    const active = Number((await client.query(`SELECT count(*) AS n FROM pg_stat_replication`)).rows[0].n);
    findings.push({
      check: 'WAL senders',
      ok: senders - active >= services.length,
      detail: `${active} of ${senders} in use; ${services.length} pipelines stream at once`,
      fix: senders - active >= services.length ? undefined : `ALTER SYSTEM SET max_wal_senders = ${active + needed}; then restart PostgreSQL`,
    });
    const role = (await client.query(`SELECT current_user AS name, rolreplication OR rolsuper AS ok FROM pg_roles WHERE rolname = current_user`)).rows[0];
    findings.push({ check: 'REPLICATION privilege', ok: role.ok, detail: `role ${role.name} ${role.ok ? 'may' : 'may not'} replicate`, fix: role.ok ? undefined : `ALTER ROLE ${role.name} WITH REPLICATION;` });

    // Not a check: what happens when the monolith's schema changes under a running sync.
    const policies = [...new Set(services.flatMap((s) => s.tables.map((t) => `new columns ${t.newColumn ?? config.sync.schemaChanges.newColumn}, TRUNCATE ${t.truncate ?? config.sync.schemaChanges.truncate}`)))];
    findings.push({
      check: 'schema changes',
      ok: true,
      detail: `logical replication carries no DDL; each pipeline compares every table's shape as the stream gives it: ${policies.join(' / ')} (sync.schemaChanges, or per table); a mapped column dropped or renamed, or retyped to what the service column cannot hold, stops that pipeline right there, nothing lost (strangler sync status says why; strangler sync resume goes on); nothing of this touches the legacy database`,
    });

    const names = [...new Set(services.flatMap((s) => s.tables.map((t) => t.source)))];
    const catalog = await readSourceTables(client, names);
    for (const s of services) {
      for (const t of s.tables) {
        const problem = tableProblem(catalog.get(t.source), t.source, t.exclude);
        findings.push({ check: `table ${t.source} (${s.name})`, ok: !problem, detail: problem?.problem ?? `key (${catalog.get(t.source)!.keyColumns.join(', ')}), ${catalog.get(t.source)!.columns.length} columns`, fix: problem?.fix });
      }
    }
    findings.push(...(await idRangeFindingsOf(config, client, catalog)));
    return findings;
  } finally {
    await client.end();
  }
}

/**
 * The key generators of every writing service's database that exists, against the monolith's
 * ids (a database not created yet has nothing to check: sync start creates its tables with a
 * range of their own).
 */
async function idRangeFindingsOf(config: ResolvedConfig, legacy: pg.Client, catalog: Map<string, SourceTable>): Promise<DoctorFinding[]> {
  const findings: DoctorFinding[] = [];
  for (const service of config.services) {
    for (const f of (await serviceIdRanges(config, service, legacy, catalog)) ?? []) {
      findings.push({ check: `ids ${service.name}.${f.table}`, ok: f.ok, detail: f.detail, fix: f.ok ? undefined : f.fix.length ? `${f.fix.join(' ')}  (or: strangler sync start ${service.name} --fix-sequences)` : undefined });
    }
  }
  return findings;
}
