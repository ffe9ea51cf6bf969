/**
 * Structural comparison of a legacy answer and a service answer for shadow traffic, with the
 * expected differences (timestamps, generated ids) declared as ignore paths in a JSONPath subset.
 */

export interface DiffEntry {
  path: string;
  kind: 'changed' | 'missing-in-service' | 'extra-in-service' | 'type';
  legacy?: unknown;
  service?: unknown;
}

export interface ResponseSample {
  status: number;
  contentType?: string;
  body: Buffer | string;
}

export interface Comparison {
  match: boolean;
  statusMatch: boolean;
  diffs: DiffEntry[];
  /** true when diffs were cut at maxDiffs */
  truncated: boolean;
  /** Differences left out because legacy differs from itself there (see NoiseModel); 0 without one. */
  noise: number;
}

/**
 * What two answers of legacy to the same request, taken moments apart, differ in (Diffy's
 * noise): the JSON paths with the kind of difference at each, and whether the status differed.
 * A legacy-vs-service difference at such a path, of the same kind, is noise, not a mismatch:
 * a list that grew, a counter, a generated field. A different kind (a string that became a
 * number) is never explained by legacy changing its value, so it still counts.
 */
export interface NoiseModel {
  paths: ReadonlyMap<string, DiffEntry['kind']>;
  status: boolean;
}

/** The noise two legacy answers show (compare them with a large maxDiffs: a cut-off list misses noise). */
export function noiseOf(legacyVsLegacy: Comparison): NoiseModel {
  return { paths: new Map(legacyVsLegacy.diffs.map((d) => [d.path, d.kind])), status: !legacyVsLegacy.statusMatch };
}

/** A noisy path as learned across requests: array positions folded into [*] ($.items[3].id → $.items[*].id). */
export function generalizePath(path: string): string {
  return path.replace(/\[\d+\]/g, '[*]');
}

export type IgnoreMatcher = (path: ReadonlyArray<string | number>) => boolean;

type Step = { key: string } | { index: number } | { anyIndex: true } | { anyKey: true } | { deep: string };

const KEY = /^[A-Za-z0-9_-]+$/;

function parseIgnorePath(text: string): Step[] {
  const bad = (why: string) => new Error(`ignore path "${text}" is not supported: ${why}; use forms like $.a.b, $.items[*].id, $..updatedAt`);
  if (!text.startsWith('$')) throw bad('it must start with $');
  const steps: Step[] = [];
  let i = 1;
  while (i < text.length) {
    if (text.startsWith('..', i)) {
      const m = /^[A-Za-z0-9_-]+/.exec(text.slice(i + 2));
      if (!m) throw bad('".." must be followed by a key name ($..* would ignore everything)');
      steps.push({ deep: m[0] });
      i += 2 + m[0].length;
    } else if (text[i] === '.') {
      const rest = text.slice(i + 1);
      if (rest.startsWith('*')) {
        steps.push({ anyKey: true });
        i += 2;
        continue;
      }
      const m = /^[A-Za-z0-9_-]+/.exec(rest);
      if (!m) throw bad(`expected a key name at position ${i + 1}`);
      steps.push({ key: m[0] });
      i += 1 + m[0].length;
    } else if (text[i] === '[') {
      const m = /^\[(\*|\d+)\]/.exec(text.slice(i));
      if (!m) throw bad('only [*] and [<index>] are supported inside brackets');
      steps.push(m[1] === '*' ? { anyIndex: true } : { index: Number(m[1]) });
      i += m[0].length;
    } else {
      throw bad(`unexpected "${text[i]}" at position ${i}`);
    }
  }
  if (steps.length === 0) throw bad('"$" alone would ignore the whole body');
  // `$.*` and `$[*]` match every top-level member, so like `$..*` they would silence the comparison entirely.
  if (steps.length === 1 && ('anyKey' in steps[0] || 'anyIndex' in steps[0])) throw bad('a lone wildcard would ignore the whole body');
  return steps;
}

function matchSteps(steps: Step[], s: number, path: ReadonlyArray<string | number>, p: number): boolean {
  // A pattern that is fully matched ignores the node and everything below it.
  if (s === steps.length) return true;
  if (p === path.length) return false;
  const step = steps[s];
  const seg = path[p];
  if ('deep' in step) {
    for (let j = p; j < path.length; j++) if (path[j] === step.deep && matchSteps(steps, s + 1, path, j + 1)) return true;
    return false;
  }
  if ('key' in step) return seg === step.key && matchSteps(steps, s + 1, path, p + 1);
  if ('index' in step) return seg === step.index && matchSteps(steps, s + 1, path, p + 1);
  if ('anyIndex' in step) return typeof seg === 'number' && matchSteps(steps, s + 1, path, p + 1);
  return typeof seg === 'string' && matchSteps(steps, s + 1, path, p + 1);
}

/**
 * Compiles ignore paths once (at config load) so a typo fails the config instead of silently ignoring
 * nothing (or everything) on every shadowed request; throws an Error naming the bad path.
 */
export function compileIgnorePaths(paths: string[]): IgnoreMatcher {
  const compiled = paths.map(parseIgnorePath);
  if (compiled.length === 0) return () => false;
  return (path) => compiled.some((steps) => matchSteps(steps, 0, path, 0));
}

/** Renders a path the way ignore paths are written (`$.items[0].id`), so a diff can be pasted into the config. */
export function formatPath(path: ReadonlyArray<string | number>): string {
  let out = '$';
  for (const seg of path) out += typeof seg === 'number' ? `[${seg}]` : KEY.test(seg) ? `.${seg}` : `[${JSON.stringify(seg)}]`;
  return out;
}

function typeOf(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

/**
 * Structural diff: object keys in any order, arrays by index, primitives by type and value. Types are
 * compared before values because '1.00' and 1 render alike in logs yet break typed clients.
 */
export function diffJson(legacy: unknown, service: unknown, ignore: IgnoreMatcher, maxDiffs = 20, noise?: NoiseModel): { diffs: DiffEntry[]; truncated: boolean; noise: number } {
  const diffs: DiffEntry[] = [];
  let truncated = false;
  let noisy = 0;
  const add = (d: DiffEntry) => {
    // Noise is left out before the cap, so that maxDiffs keeps real differences only.
    if (noise?.paths.get(d.path) === d.kind) noisy++;
    else if (diffs.length >= maxDiffs) truncated = true;
    else diffs.push(d);
  };
  const walk = (a: unknown, b: unknown, path: Array<string | number>) => {
    if (truncated || (path.length > 0 && ignore(path))) return;
    const ta = typeOf(a);
    const tb = typeOf(b);
    if (ta !== tb) return add({ path: formatPath(path), kind: 'type', legacy: a, service: b });
    if (ta === 'array') {
      const x = a as unknown[];
      const y = b as unknown[];
      for (let i = 0; i < Math.max(x.length, y.length); i++) {
        if (i >= y.length) {
          if (!ignore([...path, i])) add({ path: formatPath([...path, i]), kind: 'missing-in-service', legacy: x[i] });
        } else if (i >= x.length) {
          if (!ignore([...path, i])) add({ path: formatPath([...path, i]), kind: 'extra-in-service', service: y[i] });
        } else walk(x[i], y[i], [...path, i]);
      }
      return;
    }
    if (ta === 'object') {
      const x = a as Record<string, unknown>;
      const y = b as Record<string, unknown>;
      for (const key of Object.keys(x)) {
        if (!Object.hasOwn(y, key)) {
          if (!ignore([...path, key])) add({ path: formatPath([...path, key]), kind: 'missing-in-service', legacy: x[key] });
        } else walk(x[key], y[key], [...path, key]);
      }
      for (const key of Object.keys(y)) {
        if (!Object.hasOwn(x, key) && !ignore([...path, key])) add({ path: formatPath([...path, key]), kind: 'extra-in-service', service: y[key] });
      }
      return;
    }
    if (!Object.is(a, b)) add({ path: formatPath(path), kind: 'changed', legacy: a, service: b });
  };
  walk(legacy, service, []);
  return { diffs, truncated, noise: noisy };
}

const isJson = (type?: string) => !!type && /^application\/([\w.-]+\+)?json\b/i.test(type);

function parse(body: Buffer | string): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(typeof body === 'string' ? body : body.toString('utf8')) };
  } catch {
    return { ok: false };
  }
}

/** First 200 characters (code points, not bytes, so a preview never ends in half a character). */
function preview(body: Buffer): string {
  return Array.from(body.toString('utf8', 0, 800)).slice(0, 200).join('');
}

/**
 * Status and body: JSON structurally (when both sides are JSON), anything else byte for byte. A body that
 * claims JSON but does not parse falls back to text, so broken JSON is still seen as equal or different.
 */
export function compareResponses(legacy: ResponseSample, service: ResponseSample, ignore: IgnoreMatcher, maxDiffs = 20, noise?: NoiseModel): Comparison {
  const statusMatch = legacy.status === service.status;
  // A status legacy itself changed between two answers says nothing about the service.
  const statusOk = statusMatch || !!noise?.status;
  if (isJson(legacy.contentType) && isJson(service.contentType)) {
    const a = parse(legacy.body);
    const b = parse(service.body);
    if (a.ok && b.ok) {
      const { diffs, truncated, noise: noisy } = diffJson(a.value, b.value, ignore, maxDiffs, noise);
      // `!truncated` only matters for maxDiffs <= 0, where differences exist but none were kept.
      return { match: statusOk && diffs.length === 0 && !truncated, statusMatch, diffs, truncated, noise: noisy };
    }
  }
  const x = typeof legacy.body === 'string' ? Buffer.from(legacy.body) : legacy.body;
  const y = typeof service.body === 'string' ? Buffer.from(service.body) : service.body;
  // A body that is not JSON is one value: noise only when legacy's own two answers differed in it.
  const differs = !x.equals(y);
  const noisy = differs && noise?.paths.get('$') === 'changed';
  const diffs: DiffEntry[] = differs && !noisy ? [{ path: '$', kind: 'changed', legacy: preview(x), service: preview(y) }] : [];
  return { match: statusOk && diffs.length === 0, statusMatch, diffs, truncated: false, noise: noisy ? 1 : 0 };
}
