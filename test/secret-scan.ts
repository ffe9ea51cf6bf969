import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { secretStrength } from '../core/config/secret-strength.ts';

/**
 * What the repository says that could be a secret: every string anyone who reads the
 * repository (its code, YAML, docs) knows, so none may ever sign a token a deployment accepts.
 */

/** The text of every file git tracks (binary files skipped). */
export function trackedTextFiles(root: string): Array<{ path: string; text: string }> {
  const paths = execFileSync('git', ['ls-files', '-z'], { cwd: root, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }).split('\0').filter(Boolean);
  const files: Array<{ path: string; text: string }> = [];
  for (const path of paths) {
    let bytes: Buffer;
    try {
      bytes = readFileSync(resolve(root, path));
    } catch {
      continue; // deleted in the work tree
    }
    if (bytes.includes(0)) continue;
    files.push({ path, text: bytes.toString('utf8') });
  }
  return files;
}

const EDGE = /^[\s'"`,;:()[\]{}<>|]+|[\s'"`,;:()[\]{}<>|.]+$/g;

/**
 * Candidate secrets in a text, 16 to 256 characters (no version of the toolkit accepted a
 * shorter secret): quoted strings, the values of `key: value` and `KEY=value` lines, and every
 * whitespace-separated word without its surrounding punctuation.
 */
export function secretLikeStrings(text: string): Set<string> {
  const found = new Set<string>();
  const add = (s: string | undefined) => {
    const v = s?.replace(EDGE, '');
    if (v && v.length >= 16 && v.length <= 256) found.add(v);
  };
  for (const m of text.matchAll(/'([^'\n]+)'|"([^"\n]+)"|`([^`\n]+)`/g)) add(m[1] ?? m[2] ?? m[3]);
  for (const m of text.matchAll(/^\s*-?\s*[\w.-]+\s*[:=]\s*(.+?)\s*$/gm)) add(m[1]);
  for (const word of text.split(/\s+/)) {
    add(word);
    // Inside a word: `key=value`, `"secret",` and the like.
    for (const part of word.split(/[=:,'"`()[\]{}<>]/)) add(part);
  }
  return found;
}

/** Every candidate secret in the repository's tracked files. */
export function repositorySecrets(root: string): Set<string> {
  const all = new Set<string>();
  for (const { text } of trackedTextFiles(root)) for (const s of secretLikeStrings(text)) all.add(s);
  return all;
}

/** A string that could be a generated secret: strong enough for the toolkit to accept. */
export function looksGenerated(s: string): boolean {
  return /^[A-Za-z0-9+/=_-]{20,}$/.test(s) && secretStrength(s).problem === null;
}
