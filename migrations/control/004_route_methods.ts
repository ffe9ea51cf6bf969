import type { Migration } from '../runner.ts';
import { addRoutesColumn } from './routes-column.ts';

/**
 * A route may be scoped to HTTP methods (reads move before writes): its mode applies to those,
 * every other method goes to legacy. null: all methods (every route written before this).
 */
export function controlRouteMethods(schema: string): Migration {
  return addRoutesColumn(schema, 'methods', 'text[]');
}
