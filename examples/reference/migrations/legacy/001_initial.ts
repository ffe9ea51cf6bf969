import type { Knex } from 'knex';

/**
 * The reference monolith's schema. It has what replication must carry in a real monolith:
 * serial keys, foreign keys, timestamptz, numeric money, text[] and jsonb, a template body big
 * enough to live out of line in TOAST, and stored documents as bytea.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE users (
      id            serial PRIMARY KEY,
      email         text NOT NULL UNIQUE,
      password_hash text NOT NULL,
      display_name  text,
      created_at    timestamptz NOT NULL DEFAULT now(),
      updated_at    timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE invoices (
      id             serial PRIMARY KEY,
      user_id        integer NOT NULL REFERENCES users(id) ON DELETE CASCADE,
      number         text NOT NULL,
      customer_name  text NOT NULL,
      customer_email text,
      status         text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'sent', 'paid', 'void')),
      currency       char(3) NOT NULL DEFAULT 'EUR',
      issue_date     date NOT NULL DEFAULT current_date,
      due_date       date,
      subtotal       numeric(12,2) NOT NULL DEFAULT 0,
      tax_rate       numeric(5,2) NOT NULL DEFAULT 0,
      tax            numeric(12,2) NOT NULL DEFAULT 0,
      total          numeric(12,2) NOT NULL DEFAULT 0,
      tags           text[] NOT NULL DEFAULT '{}',
      metadata       jsonb NOT NULL DEFAULT '{}',
      paid_at        timestamptz,
      created_at     timestamptz NOT NULL DEFAULT now(),
      updated_at     timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX invoices_user_id_idx ON invoices (user_id, id);

    CREATE TABLE invoice_items (
      id          serial PRIMARY KEY,
      invoice_id  integer NOT NULL REFERENCES invoices(id) ON DELETE CASCADE,
      position    integer NOT NULL,
      description text NOT NULL,
      quantity    numeric(12,3) NOT NULL,
      unit_price  numeric(12,2) NOT NULL,
      amount      numeric(12,2) NOT NULL
    );
    CREATE INDEX invoice_items_invoice_id_idx ON invoice_items (invoice_id);

    CREATE TABLE templates (
      id         serial PRIMARY KEY,
      user_id    integer NOT NULL REFERENCES users(id) ON DELETE CASCADE,
      name       text NOT NULL,
      body       text NOT NULL,
      is_default boolean NOT NULL DEFAULT false,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    );
    -- Bodies over ~2 kB are stored out of line, uncompressed: the case where logical decoding
    -- sends "unchanged TOAST" for an UPDATE that leaves the body alone.
    ALTER TABLE templates ALTER COLUMN body SET STORAGE EXTERNAL;

    CREATE TABLE ocr_documents (
      id         serial PRIMARY KEY,
      user_id    integer NOT NULL REFERENCES users(id) ON DELETE CASCADE,
      filename   text NOT NULL,
      mime_type  text NOT NULL,
      size_bytes integer NOT NULL,
      content    bytea NOT NULL,
      text       text NOT NULL,
      fields     jsonb NOT NULL DEFAULT '{}',
      confidence numeric(5,2) NOT NULL DEFAULT 0,
      created_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE chat_messages (
      id         serial PRIMARY KEY,
      user_id    integer NOT NULL REFERENCES users(id) ON DELETE CASCADE,
      role       text NOT NULL CHECK (role IN ('user', 'assistant')),
      content    text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX chat_messages_user_id_idx ON chat_messages (user_id, id);
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('DROP TABLE IF EXISTS chat_messages, ocr_documents, templates, invoice_items, invoices, users CASCADE');
}
