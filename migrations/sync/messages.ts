/**
 * Logical messages the toolkit writes into a source's WAL (pg_logical_emit_message, always
 * transactional) and reads back in the stream, in order with the changes around them.
 */

/** Every interval, by the worker: the lag in seconds is measured with it. */
export const HEARTBEAT_PREFIX = 'strangler_heartbeat';
/** By a drain: once the pipeline has applied past it, everything committed before is on the target. */
export const FENCE_PREFIX = 'strangler_fence';
/** Moves a service's copies of an owner's tables between legacy and the owner (handover.ts). */
export const HANDOVER_PREFIX = 'strangler_handover';

export interface HandoverMessage {
  /** The service keeping the copies. */
  service: string;
  /** The service owning the tables. */
  owner: string;
  /** Which source feeds the copies from this message on. */
  to: 'owner' | 'legacy';
}
