import type { Knex } from 'knex';
import type { Migration } from '../runner.ts';

/**
 * The control database: the route table and its global version (the truth every gateway
 * follows), each service's cutover phase, the audit log and every check result, and the lock
 * that keeps two changes of one prefix apart. `schema` comes from strangler.yaml.
 */
export function controlInitial(schema: string): Migration {
  const s = `"${schema}"`;
  return {
    async up(knex: Knex) {
      await knex.raw(`
        CREATE SCHEMA IF NOT EXISTS ${s};

        CREATE TABLE ${s}.route_version (
          singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
          version    bigint NOT NULL,
          changed_at timestamptz NOT NULL DEFAULT now()
        );
        INSERT INTO ${s}.route_version (version) VALUES (0);

        CREATE TABLE ${s}.routes (
          prefix     text PRIMARY KEY,
          service    text NOT NULL,
          mode       text NOT NULL CHECK (mode IN ('legacy', 'shadow', 'canary', 'service')),
          weight     numeric(5,2) NOT NULL DEFAULT 0 CHECK (weight BETWEEN 0 AND 100),
          version    bigint NOT NULL,
          updated_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE ${s}.service_state (
          service     text PRIMARY KEY,
          prefix      text NOT NULL UNIQUE,
          phase       text NOT NULL,
          phase_since timestamptz NOT NULL DEFAULT now(),
          progress    jsonb,
          updated_at  timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE ${s}.audit_log (
          id            bigserial PRIMARY KEY,
          at            timestamptz NOT NULL DEFAULT now(),
          actor         text NOT NULL,
          command       text NOT NULL,
          service       text,
          prefix        text,
          from_phase    text,
          to_phase      text,
          from_route    jsonb,
          to_route      jsonb,
          route_version bigint,
          reason        text,
          forced        boolean NOT NULL DEFAULT false,
          outcome       text NOT NULL,
          details       jsonb NOT NULL DEFAULT '{}'
        );
        CREATE INDEX audit_log_prefix_idx ON ${s}.audit_log (prefix, id);

        CREATE TABLE ${s}.check_results (
          id        bigserial PRIMARY KEY,
          audit_id  bigint REFERENCES ${s}.audit_log(id) ON DELETE CASCADE,
          at        timestamptz NOT NULL DEFAULT now(),
          service   text NOT NULL,
          name      text NOT NULL,
          ok        boolean NOT NULL,
          retriable boolean NOT NULL,
          reason    text NOT NULL,
          forced    boolean NOT NULL DEFAULT false
        );

        CREATE TABLE ${s}.prefix_locks (
          prefix      text PRIMARY KEY,
          holder      text NOT NULL,
          command     text NOT NULL,
          acquired_at timestamptz NOT NULL DEFAULT now(),
          expires_at  timestamptz NOT NULL
        );
      `);
    },
    async down(knex: Knex) {
      await knex.raw(`DROP TABLE IF EXISTS ${s}.prefix_locks, ${s}.check_results, ${s}.audit_log, ${s}.service_state, ${s}.routes, ${s}.route_version`);
    },
  };
}
