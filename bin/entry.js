// Runs a command line from its TypeScript sources through tsx when they are there (a checkout:
// development needs no build), else from the JavaScript the build put in dist/ (an installed
// package, the image: no TypeScript loader at run time).
import { existsSync } from 'node:fs';

/** `sources`, `built`: URLs of the entry's .ts file and of its compiled .js file. */
export async function runEntry(sources, built) {
  if (existsSync(sources)) {
    const { register } = await import('tsx/esm/api');
    register();
    await import(sources.href);
  } else {
    await import(built.href);
  }
}
