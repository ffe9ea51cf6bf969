#!/usr/bin/env node
// The `strangler` command (bin/entry.js: sources in a checkout, dist/ in a package).
import { runEntry } from './entry.js';

await runEntry(new URL('../cli/main.ts', import.meta.url), new URL('../dist/cli/main.js', import.meta.url));
