import { defineConfig } from 'vitest/config';
import base from './vitest.config.ts';

/**
 * The subset `.ci/node-lines` runs on each supported Node line (22, 24, 26) besides the full
 * suite on the machine's Node: the unit tests (no server) and one end-to-end cutover on real
 * PostgreSQL, Redis, gateways and the CLI. The report file is set per line by the script.
 */
export default defineConfig({
  ...base,
  test: {
    ...base.test,
    include: [
      'core/config/*.test.ts',
      'cutover/state-machine.test.ts',
      'cutover/checks.test.ts',
      'gateway/pure.test.ts',
      'gateway/json-diff.test.ts',
      'gateway/outlier.test.ts',
      'gateway/edge-auth.test.ts',
      'migrations/sync/pure.test.ts',
      'migrations/sync/schema-change.test.ts',
      'cutover/cutover.test.ts',
    ],
    exclude: ['node_modules/**', 'dist/**', 'scratch/**'],
  },
});
