#!/usr/bin/env node
// The reference example's command line (bin/entry.js: sources in a checkout, dist/ in the image).
import { runEntry } from '../../bin/entry.js';

await runEntry(new URL('./cli.ts', import.meta.url), new URL('../../dist/examples/reference/cli.js', import.meta.url));
