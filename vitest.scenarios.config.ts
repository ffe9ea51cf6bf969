import { defineConfig } from 'vitest/config';
import base from './vitest.config.ts';

/**
 * The heavy scenarios (`npm run test:scenarios`): crashes at random points under load, frozen
 * and killed dependencies, whole migrations. Minutes each, so apart from `npm test`; `.ci/run`
 * runs both. (Spread, not mergeConfig: its arrays would add npm test's exclusion of these files.)
 */
export default defineConfig({
  ...base,
  test: {
    ...base.test,
    include: ['**/*.scenario.test.ts'],
    exclude: ['node_modules/**', 'dist/**', 'scratch/**'],
    testTimeout: 600_000,
    outputFile: { json: '.vitest-scenarios.json' },
  },
});
