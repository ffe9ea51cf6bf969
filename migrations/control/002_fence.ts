import type { Migration } from '../runner.ts';
import { addRoutesColumn } from './routes-column.ts';

/** A fenced route holds writes to its prefix at every gateway (reads go on) during a switchover. */
export function controlFence(schema: string): Migration {
  return addRoutesColumn(schema, 'fenced', 'boolean NOT NULL DEFAULT false');
}
