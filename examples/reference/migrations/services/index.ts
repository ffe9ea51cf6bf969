import type { Knex } from 'knex';
import type { ResolvedService } from '../../../../core/config/load.ts';
import { migrateLatest, type MigrationSet } from '../../../../migrations/runner.ts';
import { EVENT_SOURCES, OUTBOX_DDL, OUTBOX_TABLE, PROCESSED_DDL, PROCESSED_TABLE } from '../../services/events/events.ts';
import { ACTIVITY_DDL, ACTIVITY_TABLE } from '../../services/events/activity.ts';
import { SERVICE_ID_RANGE_START, TABLE_DDL } from './tables.ts';

/**
 * A service database's schema, from the tables its strangler.yaml mapping names: the owned
 * tables with id sequences in the service range, the replicas as plain copies (the sync fills
 * them; the service never writes them). Column renames and exclusions are the sync's concern;
 * the shipped mappings keep legacy names.
 */
export function serviceMigrations(service: ResolvedService): MigrationSet {
  const tables = service.tables.map((t) => ({ source: t.source, target: t.target, owned: !t.replica && !service.readOnly }));
  const unknown = tables.filter((t) => !TABLE_DDL[t.source]);
  return {
    name: `svc_${service.name}`,
    migrations: {
      // OCR jobs: the upload waits here until a worker has read it (never synced: service-only state).
      ...(service.name === 'ocr'
        ? {
            '003_ocr_jobs': {
              async up(knex: Knex) {
                await knex.raw(`CREATE TABLE IF NOT EXISTS ocr_jobs (id bigserial PRIMARY KEY, user_id integer NOT NULL, filename text NOT NULL, mime_type text NOT NULL, content bytea,
                  status text NOT NULL, attempts integer NOT NULL DEFAULT 0, error text, document_id integer, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())`);
              },
              async down(knex: Knex) {
                await knex.raw('DROP TABLE IF EXISTS ocr_jobs');
              },
            },
          }
        : {}),
      // Domain events: the publishers' outbox, the consumers' record of what they applied (never synced).
      ...((EVENT_SOURCES as readonly string[]).includes(service.name)
        ? {
            '004_event_outbox': {
              async up(knex: Knex) {
                await knex.raw(OUTBOX_DDL);
              },
              async down(knex: Knex) {
                await knex.raw(`DROP TABLE IF EXISTS ${OUTBOX_TABLE}`);
              },
            },
          }
        : {}),
      ...(service.name === 'analytics'
        ? {
            '005_event_activity': {
              async up(knex: Knex) {
                await knex.raw(PROCESSED_DDL);
                await knex.raw(ACTIVITY_DDL);
              },
              async down(knex: Knex) {
                await knex.raw(`DROP TABLE IF EXISTS ${ACTIVITY_TABLE}; DROP TABLE IF EXISTS ${PROCESSED_TABLE}`);
              },
            },
          }
        : {}),
      // Auth's signing keys (RS256, rotated; the JWKS publishes the current and the previous ones).
      ...(service.name === 'auth'
        ? {
            '002_signing_keys': {
              async up(knex: Knex) {
                await knex.raw(`CREATE TABLE IF NOT EXISTS signing_keys (kid text PRIMARY KEY, private_jwk jsonb NOT NULL, public_jwk jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), retired_at timestamptz)`);
              },
              async down(knex: Knex) {
                await knex.raw('DROP TABLE IF EXISTS signing_keys');
              },
            },
            // Rotation: a new key is published before it signs (services/auth/rotation.ts).
            '006_signing_key_activation': {
              async up(knex: Knex) {
                await knex.raw('ALTER TABLE signing_keys ADD COLUMN IF NOT EXISTS activates_at timestamptz NOT NULL DEFAULT now()');
              },
              async down(knex: Knex) {
                await knex.raw('ALTER TABLE signing_keys DROP COLUMN IF EXISTS activates_at');
              },
            },
          }
        : {}),
      '001_tables': {
        async up(knex: Knex) {
          if (unknown.length) throw new Error(`no schema for legacy tables ${unknown.map((t) => t.source).join(', ')}; add them to migrations/services/tables.ts`);
          for (const t of tables) {
            const seq = `${t.target}_id_seq`;
            if (t.owned) await knex.raw(`CREATE SEQUENCE IF NOT EXISTS "${seq}" START WITH ${SERVICE_ID_RANGE_START + 1} MINVALUE ${SERVICE_ID_RANGE_START + 1}`);
            await knex.raw(TABLE_DDL[t.source](t.target, t.owned ? `nextval('"${seq}"')` : '0'));
            if (t.owned) {
              // The sync may have created the table first (without defaults): give it the range either way.
              await knex.raw(`ALTER TABLE "${t.target}" ALTER COLUMN id SET DEFAULT nextval('"${seq}"')`);
              await knex.raw(`ALTER SEQUENCE "${seq}" OWNED BY "${t.target}".id`);
            }
          }
        },
        async down(knex: Knex) {
          for (const t of [...tables].reverse()) await knex.raw(`DROP TABLE IF EXISTS "${t.target}" CASCADE`);
        },
      },
    },
  };
}

export function migrateService(service: ResolvedService): Promise<string[]> {
  return migrateLatest(service.databaseUrl, serviceMigrations(service));
}
