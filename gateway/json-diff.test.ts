import { describe, expect, it } from 'vitest';
import { compareResponses, compileIgnorePaths, diffJson, formatPath, generalizePath, noiseOf, type DiffEntry, type ResponseSample } from './json-diff.ts';

const none = compileIgnorePaths([]);
const JSON_TYPE = 'application/json; charset=utf-8';
const json = (body: unknown, status = 200, contentType = JSON_TYPE): ResponseSample => ({ status, contentType, body: JSON.stringify(body) });

describe('diffJson', () => {
  it.each<[string, unknown, unknown, DiffEntry[]]>([
    ['identical bodies have no differences', { a: 1, b: [1, 'x', null, true] }, { a: 1, b: [1, 'x', null, true] }, []],
    ['key order does not matter', { a: 1, b: { c: [1, 2], d: 'x' } }, { b: { d: 'x', c: [1, 2] }, a: 1 }, []],
    [
      'a changed nested value is reported with its path',
      { items: [{ total: '1.00' }, { total: '2.00' }] },
      { items: [{ total: '1.00' }, { total: '2.50' }] },
      [{ path: '$.items[1].total', kind: 'changed', legacy: '2.00', service: '2.50' }],
    ],
    [
      'a key only the legacy has is missing in the service, one only the service has is extra',
      { a: 1, gone: { x: 1 } },
      { a: 1, added: true },
      [
        { path: '$.gone', kind: 'missing-in-service', legacy: { x: 1 } },
        { path: '$.added', kind: 'extra-in-service', service: true },
      ],
    ],
    [
      'a longer service array reports the extra elements',
      { items: [1, 2] },
      { items: [1, 2, 3, 4] },
      [
        { path: '$.items[2]', kind: 'extra-in-service', service: 3 },
        { path: '$.items[3]', kind: 'extra-in-service', service: 4 },
      ],
    ],
    ['a shorter service array reports the missing elements', [1, 2, 3], [1], [
      { path: '$[1]', kind: 'missing-in-service', legacy: 2 },
      { path: '$[2]', kind: 'missing-in-service', legacy: 3 },
    ]],
    ["a numeric string and a number are a type difference ('1.00' vs 1)", { n: '1.00' }, { n: 1 }, [{ path: '$.n', kind: 'type', legacy: '1.00', service: 1 }]],
    ["'1' vs 1 is a type difference too, not equal", { n: '1' }, { n: 1 }, [{ path: '$.n', kind: 'type', legacy: '1', service: 1 }]],
    ['null vs an object is a type difference', { a: null }, { a: { b: 1 } }, [{ path: '$.a', kind: 'type', legacy: null, service: { b: 1 } }]],
    ['an array vs an object is a type difference', { a: [] }, { a: {} }, [{ path: '$.a', kind: 'type', legacy: [], service: {} }]],
    ['a different root type is reported at $', [1], { 0: 1 }, [{ path: '$', kind: 'type', legacy: [1], service: { 0: 1 } }]],
    ['a key that is not an identifier is quoted in the path', { 'a b': 1 }, { 'a b': 2 }, [{ path: '$["a b"]', kind: 'changed', legacy: 1, service: 2 }]],
  ])('%s', (_name, legacy, service, diffs) => {
    expect(diffJson(legacy, service, none)).toEqual({ diffs, truncated: false, noise: 0 });
  });

  it.each<[string, string[], unknown, unknown]>([
    [
      '$..updatedAt ignores the key at every depth',
      ['$..updatedAt'],
      { updatedAt: 1, a: { updatedAt: 2, b: [{ updatedAt: 3 }, { c: { updatedAt: 4 } }] } },
      { updatedAt: 9, a: { updatedAt: 8, b: [{ updatedAt: 7 }, { c: { updatedAt: 6 } }] } },
    ],
    ['$..updatedAt ignores the key when only one side has it', ['$..updatedAt'], { a: { updatedAt: 1 } }, { a: {} }],
    ['$.items[*].id ignores the id of every element', ['$.items[*].id'], { items: [{ id: 1, x: 1 }, { id: 2, x: 2 }] }, { items: [{ id: 5, x: 1 }, { id: 6, x: 2 }] }],
    ['$.items[0].id ignores the id of the first element', ['$.items[0].id'], { items: [{ id: 1 }, { id: 2 }] }, { items: [{ id: 5 }, { id: 2 }] }],
    ['$.id ignores the top-level id', ['$.id'], { id: 1, a: { id: 1 } }, { id: 2, a: { id: 1 } }],
    ['ignoring a parent ignores its children, including missing ones', ['$.meta'], { meta: { a: 1, b: [1] } }, { meta: { a: 2 } }],
    ['ignoring a parent ignores it when it is missing altogether', ['$.meta'], { meta: { a: 1 } }, {}],
    ['$.a.* ignores every key directly under a', ['$.a.*'], { a: { x: 1, y: 2 } }, { a: { x: 3, y: 4, z: 5 } }],
    ['$..meta.at ignores a key below a key found at any depth', ['$..meta.at'], { x: [{ meta: { at: 1, v: 1 } }] }, { x: [{ meta: { at: 2, v: 1 } }] }],
    ['several paths combine', ['$.id', '$..updatedAt', '$.items[*].id'], { id: 1, updatedAt: 1, items: [{ id: 1 }] }, { id: 2, updatedAt: 2, items: [{ id: 2 }] }],
  ])('%s', (_name, paths, legacy, service) => {
    expect(diffJson(legacy, service, compileIgnorePaths(paths))).toEqual({ diffs: [], truncated: false, noise: 0 });
  });

  it.each<[string, string[], unknown, unknown, string[]]>([
    ['$.id does not ignore a nested id', ['$.id'], { a: { id: 1 } }, { a: { id: 2 } }, ['$.a.id']],
    ['$.items[0].id does not ignore the id of other elements', ['$.items[0].id'], { items: [{ id: 1 }, { id: 2 }] }, { items: [{ id: 5 }, { id: 6 }] }, ['$.items[1].id']],
    ['$.items[*].id does not ignore other keys of the elements', ['$.items[*].id'], { items: [{ id: 1, x: 1 }] }, { items: [{ id: 2, x: 2 }] }, ['$.items[0].x']],
    ['$.a.* does not ignore keys elsewhere', ['$.a.*'], { a: { x: 1 }, b: 1 }, { a: { x: 2 }, b: 2 }, ['$.b']],
    ['$..updatedAt does not ignore a key that merely contains the name', ['$..updatedAt'], { updatedAtUtc: 1 }, { updatedAtUtc: 2 }, ['$.updatedAtUtc']],
  ])('%s', (_name, paths, legacy, service, reported) => {
    expect(diffJson(legacy, service, compileIgnorePaths(paths)).diffs.map((d) => d.path)).toEqual(reported);
  });

  it.each<[string, number | undefined, number, boolean]>([
    ['stops at maxDiffs and says so', 2, 2, true],
    ['is not truncated when the differences fit exactly', 3, 3, false],
    ['defaults maxDiffs to 20', undefined, 20, true],
  ])('%s', (_name, maxDiffs, kept, truncated) => {
    const legacy = Object.fromEntries(Array.from({ length: maxDiffs === undefined ? 25 : 3 }, (_, i) => [`k${i}`, i]));
    const service = Object.fromEntries(Object.entries(legacy).map(([k, v]) => [k, v + 100]));
    const r = diffJson(legacy, service, none, maxDiffs);
    expect(r.diffs).toHaveLength(kept);
    expect(r.truncated).toBe(truncated);
  });
});

describe('compileIgnorePaths', () => {
  it.each<[string, RegExp]>([
    ['$..*', /would ignore everything/],
    ['items.id', /must start with \$/],
    ['$.a[?(@.x)]', /only \[\*\] and \[<index>\]/],
    ['$', /whole body/],
    ['$.*', /whole body/],
    ['$[*]', /whole body/],
    ["$['a']", /only \[\*\] and \[<index>\]/],
    ['$.a b', /unexpected " "/],
    ['$.a.', /expected a key name/],
    ['$.a[-1]', /only \[\*\] and \[<index>\]/],
  ])('refuses %s, naming it and the supported forms', (path, why) => {
    expect(() => compileIgnorePaths(['$.ok', path])).toThrow(`ignore path "${path}" is not supported:`);
    expect(() => compileIgnorePaths([path])).toThrow(why);
    expect(() => compileIgnorePaths([path])).toThrow('use forms like $.a.b, $.items[*].id, $..updatedAt');
  });

  it.each(['$.a.b', '$.items[*].id', '$.items[0].id', '$..updatedAt', '$.a.*', '$.snake_case-key.x1', '$.a[*][0]'])('accepts %s', (path) => {
    expect(() => compileIgnorePaths([path])).not.toThrow();
  });
});

describe('formatPath', () => {
  it.each<[Array<string | number>, string]>([
    [[], '$'],
    [['items', 0, 'id'], '$.items[0].id'],
    [[2], '$[2]'],
    [['a-b', 'c_d'], '$.a-b.c_d'],
    [['a.b'], '$["a.b"]'],
  ])('renders %j as %s', (path, text) => {
    expect(formatPath(path)).toBe(text);
  });
});

describe('compareResponses', () => {
  const text = (body: string, status = 200, contentType = 'text/html'): ResponseSample => ({ status, contentType, body });

  it.each<[string, ResponseSample, ResponseSample, { match: boolean; statusMatch: boolean; diffs?: DiffEntry[] }]>([
    ['equal JSON bodies match', json({ a: 1 }), json({ a: 1 }), { match: true, statusMatch: true, diffs: [] }],
    ['JSON key order does not matter', text('{"a":1,"b":2}', 200, JSON_TYPE), text('{"b":2,"a":1}', 200, JSON_TYPE), { match: true, statusMatch: true }],
    ['JSON whitespace does not matter', text('{ "a" : [1, 2] }', 200, JSON_TYPE), text('{"a":[1,2]}', 200, JSON_TYPE), { match: true, statusMatch: true }],
    ['a +json type is compared as JSON', json({ a: 1 }, 404, 'application/problem+json'), json({ a: 1 }, 404, 'application/json'), { match: true, statusMatch: true }],
    ['a Buffer body is compared like a string', { status: 200, contentType: JSON_TYPE, body: Buffer.from('{"a":1}') }, json({ a: 1 }), { match: true, statusMatch: true }],
    ['status 200 vs 404 is a mismatch even with equal bodies', json({ a: 1 }, 200), json({ a: 1 }, 404), { match: false, statusMatch: false, diffs: [] }],
    [
      'JSON differences are reported by path',
      json({ items: [{ total: '1.00' }, { total: '2.00' }] }),
      json({ items: [{ total: '1.00' }, { total: 2 }] }),
      { match: false, statusMatch: true, diffs: [{ path: '$.items[1].total', kind: 'type', legacy: '2.00', service: 2 }] },
    ],
    ['equal non-JSON bodies match', text('<p>a</p>'), text('<p>a</p>'), { match: true, statusMatch: true, diffs: [] }],
    ['different non-JSON bodies are one text diff at $', text('<p>a</p>'), text('<p>b</p>'), { match: false, statusMatch: true, diffs: [{ path: '$', kind: 'changed', legacy: '<p>a</p>', service: '<p>b</p>' }] }],
    ['JSON-looking bodies without a JSON type are compared as text', text('{"a":1,"b":2}', 200, 'text/plain'), text('{"b":2,"a":1}', 200, 'text/plain'), { match: false, statusMatch: true }],
    ['only one side typed JSON means text comparison', text('{"a":1}', 200, JSON_TYPE), text('{"a":1}', 200, 'text/plain'), { match: true, statusMatch: true }],
    ['a missing content type means text comparison', { status: 200, body: '{"a":1}' }, { status: 200, body: '{ "a": 1 }' }, { match: false, statusMatch: true }],
    ['the same invalid JSON on both sides matches as text', text('{bad', 200, JSON_TYPE), text('{bad', 200, JSON_TYPE), { match: true, statusMatch: true, diffs: [] }],
    [
      'invalid JSON on one side is compared as text',
      text('{"a":1}', 200, JSON_TYPE),
      text('<html>502</html>', 200, JSON_TYPE),
      { match: false, statusMatch: true, diffs: [{ path: '$', kind: 'changed', legacy: '{"a":1}', service: '<html>502</html>' }] },
    ],
    ['empty bodies typed JSON match', text('', 204, JSON_TYPE), text('', 204, JSON_TYPE), { match: true, statusMatch: true, diffs: [] }],
  ])('%s', (_name, legacy, service, expected) => {
    expect(compareResponses(legacy, service, none)).toMatchObject({ ...expected, truncated: false });
  });

  it('honours ignore paths', () => {
    const ignore = compileIgnorePaths(['$.id', '$..updatedAt']);
    expect(compareResponses(json({ id: 1, a: { updatedAt: 'x', v: 1 } }), json({ id: 2, a: { updatedAt: 'y', v: 1 } }), ignore)).toEqual({ match: true, statusMatch: true, diffs: [], truncated: false, noise: 0 });
  });

  it('previews only the first 200 characters of a text diff, without splitting a character', () => {
    const r = compareResponses(text('é'.repeat(500)), text('ü'.repeat(500)), none);
    expect(r.diffs).toEqual([{ path: '$', kind: 'changed', legacy: 'é'.repeat(200), service: 'ü'.repeat(200) }]);
  });

  it('passes maxDiffs through and reports truncation', () => {
    expect(compareResponses(json({ a: 1, b: 2, c: 3 }), json({ a: 2, b: 3, c: 4 }), none, 2)).toMatchObject({ match: false, truncated: true, diffs: [{ path: '$.a' }, { path: '$.b' }] });
  });

  it('does not call a comparison with maxDiffs 0 a match when bodies differ', () => {
    expect(compareResponses(json({ a: 1 }), json({ a: 2 }), none, 0)).toEqual({ match: false, statusMatch: true, diffs: [], truncated: true, noise: 0 });
  });
});

describe('noise cancellation (two legacy answers, Diffy style)', () => {
  const text = (body: string, status = 200): ResponseSample => ({ status, contentType: 'text/html', body });
  /** A newest-first page of a list that grows: `n` invoices so far. */
  const page = (n: number, extra: Record<string, unknown> = {}) => json({ items: [n, n - 1, n - 2].map((i) => ({ number: `INV-${i}`, total: '1.00' })), total: n, currency: 'EUR', ...extra });
  const noiseBetween = (a: ResponseSample, b: ResponseSample) => noiseOf(compareResponses(a, b, none, 1000));

  it.each<[string, ResponseSample, ResponseSample, ResponseSample, { match: boolean; paths: string[]; noise: number }]>([
    ['a list that grew between the calls is noise, not a mismatch', page(257), page(258), page(259), { match: true, paths: [], noise: 4 }],
    ['a wrong field is still a mismatch when the list around it is noisy', page(257), page(258), page(259, { currency: 'USD' }), { match: false, paths: ['$.currency'], noise: 4 }],
    ['a type change is not explained by legacy changing the value there', page(257), page(258), json({ ...JSON.parse(page(258).body as string), total: '258' }), { match: false, paths: ['$.total'], noise: 3 }],
    ['without noise every difference counts', page(257), page(257), page(258), { match: false, paths: ['$.items[0].number', '$.items[1].number', '$.items[2].number', '$.total'], noise: 0 }],
    ['a text body legacy changed itself is noise', text('<p>12:00:01</p>'), text('<p>12:00:02</p>'), text('<p>12:00:03</p>'), { match: true, paths: [], noise: 1 }],
    ['a status legacy changed itself is noise', json({ a: 1 }, 200), json({ a: 1 }, 503), json({ a: 1 }, 503), { match: true, paths: [], noise: 0 }],
  ])('%s', (_name, first, again, service, expected) => {
    const r = compareResponses(first, service, none, 20, noiseBetween(first, again));
    expect({ match: r.match, paths: r.diffs.map((d) => d.path), noise: r.noise }).toEqual(expected);
  });

  it('keeps maxDiffs for real differences: noise does not use up the cap', () => {
    const r = compareResponses(page(1), page(2, { currency: 'USD' }), none, 1, noiseBetween(page(1), page(2)));
    expect(r).toMatchObject({ match: false, truncated: false, diffs: [{ path: '$.currency' }] });
  });

  it('folds array positions when it learns noisy paths', () => {
    expect(generalizePath('$.items[12].number')).toBe('$.items[*].number');
    expect(generalizePath('$.total')).toBe('$.total');
  });
});
