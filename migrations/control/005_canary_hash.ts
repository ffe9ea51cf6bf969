import type { Migration } from '../runner.ts';
import { addRoutesColumn } from './routes-column.ts';

/**
 * The hash a canary buckets its users by (gateway/canary.ts): set when a canary begins, kept while
 * it runs. null: a canary begun before the column, which keeps the hash it began with (fnv1a).
 */
export function controlCanaryHash(schema: string): Migration {
  return addRoutesColumn(schema, 'canary_hash', 'text');
}
