#!/usr/bin/env node
// The `strangler` command. An installed package runs the JavaScript built into dist/ (npm run
// build; no TypeScript loader at run time). A source checkout (cli/main.ts beside this file)
// runs the TypeScript sources through tsx, so development never needs a build.
import { existsSync } from 'node:fs';

const sources = new URL('../cli/main.ts', import.meta.url);
if (existsSync(sources)) {
  const { register } = await import('tsx/esm/api');
  register();
  await import(sources.href);
} else {
  await import('../dist/cli/main.js');
}
