/**
 * Request-target normalisation for routing.
 * SECURITY: the gateway matches routes (and auth, rate-limit rules) on the same path it forwards,
 * so no encoding trick can make it read a path one way while the upstream reads it another:
 * dot segments are resolved, `%2e` counts as a dot, repeated slashes merge, and anything whose
 * meaning differs between servers (encoded slashes, backslashes, `;` path parameters, control
 * characters, malformed escapes) is refused outright rather than guessed at.
 */

export type NormalizedPath = { ok: true; path: string; matchPath: string; query: string } | { ok: false; reason: string };

const UNRESERVED = /[A-Za-z0-9\-._~]/;
const HEX = '0123456789ABCDEF';

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

/** Nothing to do for the common case: only unreserved characters and single slashes. */
function isPlain(path: string): boolean {
  let prev = 0;
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c === 37 || c === 59 || c === 92 || c < 33 || c === 127) return false; // % ; \ controls/space
    if (c === 47 && prev === 47) return false; // //
    if (c === 46 && prev === 47) return false; // /. (dot segments, hidden files: take the slow path)
    prev = c;
  }
  return true;
}

function fail(reason: string): NormalizedPath {
  return { ok: false, reason };
}

/** Normalises `req.url` (origin-form; absolute-form is reduced to its path). */
export function normalizeRequestTarget(rawUrl: string): NormalizedPath {
  let target = rawUrl;
  const hash = target.indexOf('#');
  if (hash >= 0) target = target.slice(0, hash);
  if (/^https?:\/\//i.test(target)) {
    const slash = target.indexOf('/', target.indexOf('//') + 2);
    target = slash >= 0 ? target.slice(slash) : '/';
  }
  const q = target.indexOf('?');
  const rawPath = q >= 0 ? target.slice(0, q) : target;
  const query = q >= 0 ? target.slice(q) : '';
  if (!rawPath.startsWith('/')) return fail('the path must start with "/"');

  if (isPlain(rawPath)) return done(rawPath, query);

  // 1. Percent-decoding: unreserved characters are decoded (so %2e is a dot), the rest is kept
  //    with upper-case hex; encoded slashes, backslashes and controls are refused.
  let decoded = '';
  for (let i = 0; i < rawPath.length; i++) {
    const ch = rawPath[i];
    const c = rawPath.charCodeAt(i);
    if (c < 32 || c === 127) return fail('control characters are not allowed in the path');
    if (ch === ' ') return fail('a raw space is not allowed in the path');
    if (ch === '\\') return fail('backslashes are not allowed in the path');
    if (ch === ';') return fail('path parameters (";") are not accepted: upstreams disagree on what they mean');
    if (ch !== '%') {
      decoded += ch;
      continue;
    }
    const hi = hexValue(rawPath.charCodeAt(i + 1));
    const lo = hexValue(rawPath.charCodeAt(i + 2));
    if (hi < 0 || lo < 0) return fail('malformed percent-encoding in the path');
    const byte = hi * 16 + lo;
    i += 2;
    if (byte === 0x2f || byte === 0x5c) return fail('encoded slashes (%2F, %5C) are not allowed in the path');
    if (byte < 0x20 || byte === 0x7f) return fail('encoded control characters are not allowed in the path');
    const char = String.fromCharCode(byte);
    decoded += byte < 0x80 && UNRESERVED.test(char) ? char : `%${HEX[hi]}${HEX[lo]}`;
  }

  // 2. Merge slashes, then remove dot segments (RFC 3986 §5.2.4); climbing above / is refused.
  const segments = decoded.split('/');
  const out: string[] = [];
  for (let i = 1; i < segments.length; i++) {
    const seg = segments[i];
    const last = i === segments.length - 1;
    if (seg === '' && !last) continue;
    if (seg === '.') {
      if (last) out.push('');
      continue;
    }
    if (seg === '..') {
      if (out.length === 0 || (out.length === 1 && out[0] === '')) return fail('the path climbs above the root ("..")');
      out.pop();
      if (last) out.push('');
      continue;
    }
    out.push(seg);
  }
  return done(`/${out.join('/')}`, query);
}

function done(path: string, query: string): NormalizedPath {
  let matchPath = path.toLowerCase();
  if (matchPath.length > 1 && matchPath.endsWith('/')) matchPath = matchPath.replace(/\/+$/, '') || '/';
  return { ok: true, path, matchPath, query };
}

/** Segment-boundary prefix match: /api/auth matches /api/auth and /api/auth/x, not /api/authx. */
export function matchesPrefix(matchPath: string, prefix: string): boolean {
  if (prefix === '/') return true;
  return matchPath === prefix || (matchPath.startsWith(prefix) && matchPath.charCodeAt(prefix.length) === 47);
}
