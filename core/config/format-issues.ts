import type { z } from 'zod';

/** `services[1].tables[0].source` from a zod path. */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out ? `.${String(key)}` : String(key);
  }
  return out || '(root)';
}

/** Turns zod issues into one line each: `key.path: what is wrong; what to write`. */
export function formatIssues(issues: ReadonlyArray<z.core.$ZodIssue>, knownKeysAt: (path: PropertyKey[]) => string[]): string[] {
  const lines: string[] = [];
  for (const issue of issues) {
    const path = issue.path as PropertyKey[];
    if (issue.code === 'unrecognized_keys') {
      const known = knownKeysAt(path);
      for (const key of issue.keys) {
        const hint = closest(key, known);
        const where = formatPath([...path, key]);
        lines.push(
          `${where}: unknown key${hint ? `; did you mean "${hint}"?` : ''} (allowed here: ${known.join(', ') || 'none'})`,
        );
      }
      continue;
    }
    lines.push(`${formatPath(path)}: ${describe(issue)}`);
  }
  return lines;
}

function describe(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'invalid_type': {
      const received = (issue as { input?: unknown }).input;
      if (received === undefined) return `required: expected a ${issue.expected}`;
      return `expected a ${issue.expected}, got ${JSON.stringify(received)}`;
    }
    case 'too_small':
      return issue.origin === 'string'
        ? `expected at least ${issue.minimum} characters`
        : `expected a value >= ${issue.minimum}`;
    case 'too_big':
      return issue.origin === 'string' ? `expected at most ${issue.maximum} characters` : `expected a value <= ${issue.maximum}`;
    case 'invalid_value':
      return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    default:
      return issue.message;
  }
}

/** The known key closest to a mistyped one, when it is close enough to be a typo. */
export function closest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const d = levenshtein(word.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      bestDistance = d;
      best = candidate;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function levenshtein(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length];
}
