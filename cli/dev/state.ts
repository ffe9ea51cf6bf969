import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { DEV_STATE_FILE, type DevStackState } from '../context.ts';
import type { Topology } from './topology.ts';

/**
 * Records a running stack in .strangler/dev-stack.json (`strangler dev up`, `npm run demo --
 * --keep`), so that strangler commands in this folder use it and `dev down` can stop it.
 * Returns what removes the record.
 */
export function recordDevStack(topology: Topology, options: { infraOnly?: boolean; cwd?: string; exports?: Record<string, string> } = {}): { state: DevStackState; remove(): void } {
  const state: DevStackState = {
    pid: process.pid,
    postgresUrl: topology.stack.postgres.baseUrl,
    redisUrl: topology.stack.redisUrl,
    startedAt: new Date().toISOString(),
    components: topology.where(),
    health: topology.health(),
    pids: topology.pids(),
    ...(options.infraOnly ? { infraOnly: true } : {}),
    ...(options.exports ? { exports: options.exports } : {}),
    secrets: topology.secrets,
  };
  const file = resolve(options.cwd ?? process.cwd(), DEV_STATE_FILE);
  mkdirSync(dirname(file), { recursive: true });
  // SECURITY: the state holds the stack's secrets: created anew (a stale file keeps its mode), readable by its owner only.
  rmSync(file, { force: true });
  writeFileSync(file, JSON.stringify(state, null, 2), { mode: 0o600 });
  return { state, remove: () => rmSync(file, { force: true }) };
}
