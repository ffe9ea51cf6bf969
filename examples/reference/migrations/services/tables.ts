/**
 * The tables a service database can hold, as the legacy schema defines them, without foreign
 * keys: the sync applies a source transaction's rows table by table (parents first, but a
 * cascade delete reaches the target child-last), so service databases keep no foreign keys to
 * synced tables until the service is finalized. `{seq}` is the id sequence, started in the
 * service's own range so rows created on either side during a canary never collide.
 */
export const TABLE_DDL: Record<string, (name: string, idDefault: string) => string> = {
  users: (t, id) => `CREATE TABLE IF NOT EXISTS "${t}" (
    id integer PRIMARY KEY DEFAULT ${id}, email text NOT NULL UNIQUE, password_hash text NOT NULL, display_name text,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())`,
  invoices: (t, id) => `CREATE TABLE IF NOT EXISTS "${t}" (
    id integer PRIMARY KEY DEFAULT ${id}, user_id integer NOT NULL, number text NOT NULL, customer_name text NOT NULL, customer_email text,
    status text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'sent', 'paid', 'void')), currency character(3) NOT NULL DEFAULT 'EUR',
    issue_date date NOT NULL DEFAULT current_date, due_date date, subtotal numeric(12,2) NOT NULL DEFAULT 0, tax_rate numeric(5,2) NOT NULL DEFAULT 0,
    tax numeric(12,2) NOT NULL DEFAULT 0, total numeric(12,2) NOT NULL DEFAULT 0, tags text[] NOT NULL DEFAULT '{}', metadata jsonb NOT NULL DEFAULT '{}',
    paid_at timestamptz, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
    CREATE INDEX IF NOT EXISTS "${t}_user_id_idx" ON "${t}" (user_id, id)`,
  invoice_items: (t, id) => `CREATE TABLE IF NOT EXISTS "${t}" (
    id integer PRIMARY KEY DEFAULT ${id}, invoice_id integer NOT NULL, position integer NOT NULL, description text NOT NULL,
    quantity numeric(12,3) NOT NULL, unit_price numeric(12,2) NOT NULL, amount numeric(12,2) NOT NULL);
    CREATE INDEX IF NOT EXISTS "${t}_invoice_id_idx" ON "${t}" (invoice_id)`,
  templates: (t, id) => `CREATE TABLE IF NOT EXISTS "${t}" (
    id integer PRIMARY KEY DEFAULT ${id}, user_id integer NOT NULL, name text NOT NULL, body text NOT NULL, is_default boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())`,
  ocr_documents: (t, id) => `CREATE TABLE IF NOT EXISTS "${t}" (
    id integer PRIMARY KEY DEFAULT ${id}, user_id integer NOT NULL, filename text NOT NULL, mime_type text NOT NULL, size_bytes integer NOT NULL,
    content bytea NOT NULL, text text NOT NULL, fields jsonb NOT NULL DEFAULT '{}', confidence numeric(5,2) NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now())`,
  chat_messages: (t, id) => `CREATE TABLE IF NOT EXISTS "${t}" (
    id integer PRIMARY KEY DEFAULT ${id}, user_id integer NOT NULL, role text NOT NULL CHECK (role IN ('user', 'assistant')), content text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now())`,
};

/**
 * The id range of rows a service creates. Legacy keeps its sequences (below the range); the
 * service's start here, so an id names one row wherever it was created. `strangler doctor`
 * and the migration refuse when legacy ids already reach the range.
 */
export const SERVICE_ID_RANGE_START = 1_000_000_000;
