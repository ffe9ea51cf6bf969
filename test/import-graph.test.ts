import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..');
/** Not the toolkit: the examples themselves, and the tests' own fixtures (test/reference.ts hands them the example). */
const OUTSIDE = new Set(['examples', 'test', 'node_modules', 'dist', 'scratch']);

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    if (name.startsWith('.') || (dir === ROOT && OUTSIDE.has(name))) return [];
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return /\.(ts|js)$/.test(name) && !name.endsWith('.d.ts') ? [path] : [];
  });
}

/** Every module specifier of a file: static imports and re-exports (type-only too), side-effect imports, import(). */
export function importSpecifiers(text: string): string[] {
  const found: string[] = [];
  for (const re of [/\b(?:import|export)\s[^'"`;]*?\bfrom\s*['"]([^'"]+)['"]/g, /\bimport\s*['"]([^'"]+)['"]/g, /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g]) {
    for (const m of text.matchAll(re)) found.push(m[1]);
  }
  return found;
}

it('reads every kind of import specifier', () => {
  const text = `import a from './a.ts';\nimport type { B } from "../b.ts";\nexport { c } from './c.ts';\nexport * from './d.ts';\nimport './e.ts';\nconst f = await import('./f.ts');\nimport {\n  g,\n  h,\n} from './g.ts';\ntype I = import('./i.ts').I;`;
  expect(importSpecifiers(text).sort()).toEqual(['../b.ts', './a.ts', './c.ts', './d.ts', './e.ts', './f.ts', './g.ts', './i.ts']);
});

it('keeps the toolkit apart from the examples: no file outside examples/ and test/ imports from examples/', () => {
  const examples = join(ROOT, 'examples') + sep;
  const offending: string[] = [];
  const files = sources(ROOT);
  expect(files.length).toBeGreaterThan(100);
  for (const file of files) {
    for (const spec of importSpecifiers(readFileSync(file, 'utf8'))) {
      if (!spec.startsWith('.') && !spec.startsWith('/')) continue;
      const target = resolve(dirname(file), spec);
      if (target.startsWith(examples)) offending.push(`${relative(ROOT, file)} imports ${spec}`);
    }
  }
  expect(offending, 'the toolkit must not depend on an example; move what it needs into the toolkit (core/, sdk/), or reach the example in tests through test/reference.ts').toEqual([]);
});
