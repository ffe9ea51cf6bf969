import type { Migration } from '../runner.ts';
import { addRoutesColumn } from './routes-column.ts';

/**
 * A fence carries a lease: the time until which its writes may be held. Gateways treat a fence
 * past it as lifted, so a command killed while it held writes cannot hold them forever.
 */
export function controlFenceLease(schema: string): Migration {
  return addRoutesColumn(schema, 'fence_expires_at', 'timestamptz');
}
