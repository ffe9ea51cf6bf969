/**
 * The tables an app's handlers read and write. The monolith uses the legacy names; an extracted
 * service passes its own (the target names of its strangler.yaml mapping), so one set of handlers
 * serves both and their contracts cannot drift apart.
 */
export interface AppTables {
  users: string;
  invoices: string;
  invoiceItems: string;
  templates: string;
  ocrDocuments: string;
  chatMessages: string;
}

export const LEGACY_TABLES: AppTables = {
  users: 'users',
  invoices: 'invoices',
  invoiceItems: 'invoice_items',
  templates: 'templates',
  ocrDocuments: 'ocr_documents',
  chatMessages: 'chat_messages',
};
