#!/usr/bin/env node
// The reference example's command line. A source checkout (cli.ts beside this file) runs the
// TypeScript through tsx; the image runs what its build compiled into dist/.
import { existsSync } from 'node:fs';

const sources = new URL('./cli.ts', import.meta.url);
if (existsSync(sources)) {
  const { register } = await import('tsx/esm/api');
  register();
  await import(sources.href);
} else {
  await import('../../dist/examples/reference/cli.js');
}
