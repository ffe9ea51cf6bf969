import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../core/config/load.ts';
import { generateSecret } from '../../core/config/secrets.ts';
import { issuersOf } from '../issuers.ts';
import { bucketIndex, LATENCY_BOUNDS_MS } from '../metrics.ts';
import { figureDeltas, jwksChanges, parseFigureTable } from './agent.ts';
import { assignSlots } from './registry-slots.ts';
import { renderHaproxy } from './render-config.ts';
import { fastMapEntries, routeMapEntries } from './route-maps.ts';

describe('the HAProxy engine, pure parts (issue 21)', () => {
  const table = {
    version: 7,
    routes: [
      { prefix: '/api/invoices', service: 'invoices', mode: 'service' as const, weight: 100 },
      { prefix: '/api/auth', service: 'auth', mode: 'canary' as const, weight: 12.5 },
      { prefix: '/api/auth/old', service: 'auth', mode: 'canary' as const, weight: 30, canaryHash: 'fnv1a' as const },
      { prefix: '/api/auth/reads', service: 'auth', mode: 'canary' as const, weight: 5, methods: ['GET'] },
      { prefix: '/api/ocr', service: 'ocr', mode: 'service' as const, weight: 100, methods: ['GET', 'HEAD'] },
      { prefix: '/api/templates', service: 'templates', mode: 'legacy' as const, weight: 0, fenced: true, fenceUntil: 1_800_000_000_000 },
      { prefix: '/', service: 'gone', mode: 'service' as const, weight: 100 },
    ],
  };

  it('writes the Lua map one line per prefix: service, mode, weight, fence deadline (0: none), method scope (*: all), canary hash', () => {
    expect(routeMapEntries(table)).toEqual([
      ['/api/invoices', 'invoices service 100 0 * xxh32'],
      ['/api/auth', 'auth canary 12.5 0 * xxh32'],
      ['/api/auth/old', 'auth canary 30 0 * fnv1a'],
      ['/api/auth/reads', 'auth canary 5 0 GET xxh32'],
      ['/api/ocr', 'ocr service 100 0 GET,HEAD xxh32'],
      ['/api/templates', 'templates legacy 0 1800000000000 * xxh32'],
      ['/', 'gone service 100 0 * xxh32'],
    ]);
  });

  it('routes natively what needs no Lua (an unscoped xxh32 canary with its cut, weight×100); fenced and scoped routes and fnv1a canaries go to Lua; an unknown service to legacy', () => {
    expect(fastMapEntries(table, new Set(['invoices', 'auth', 'ocr', 'templates']))).toEqual([
      ['/api/invoices/', 'service:invoices|/api/invoices'],
      ['/api/auth/', 'canary:auth:1250|/api/auth'],
      ['/api/auth/old/', 'lua|/api/auth/old'],
      ['/api/auth/reads/', 'lua|/api/auth/reads'],
      ['/api/ocr/', 'lua|/api/ocr'],
      ['/api/templates/', 'lua|/api/templates'],
      ['/', 'legacy|/'],
    ]);
  });

  it('keeps registered instances in the server slot they had; new ones take free slots; gone ones free theirs', () => {
    const first = assignSlots([], ['a', 'b', 'c'], 4);
    expect(first).toEqual(['a', 'b', 'c', null]);
    expect(assignSlots(first, ['c', 'd', 'a'], 4)).toEqual(['a', 'd', 'c', null]);
    expect(assignSlots(first, ['a', 'b', 'c', 'd', 'e'], 4)).toEqual(['a', 'b', 'c', 'd']);
  });

  it('reads the figures table (a key per service, side and latency bucket) as per-side deltas since the last read, a wrapped 32-bit counter included', () => {
    const line = (key: string, requests: number, errors: number) => `0x1: key=${key} use=0 exp=0 gpc0=${requests} gpc1=${errors}`;
    const last = new Map<string, [number, number]>();
    const table = [line('invoices:service:0', 9, 1), line('invoices:service:1', 1, 0), line('invoices:legacy:0', 4, 0), line(`invoices:legacy:${LATENCY_BOUNDS_MS.length}`, 2, 2)];
    const first = figureDeltas(parseFigureTable(`# table: figures\n${table.join('\n')}\n`), last);
    expect(first.map((f) => [f.service, f.target, f.requests, f.errors, f.latency.slice(0, 2), f.latency[LATENCY_BOUNDS_MS.length]])).toEqual([
      ['invoices', 'service', 10, 1, [9, 1], 0],
      ['invoices', 'legacy', 6, 2, [4, 0], 2],
    ]);
    last.set('invoices:service:0', [2 ** 32 - 2, 1]);
    const wrapped = figureDeltas(parseFigureTable(`${line('invoices:service:0', 3, 1)}\n${line('invoices:service:1', 4, 0)}`), last);
    expect(wrapped[0]).toMatchObject({ requests: 8, errors: 0, latency: expect.arrayContaining([5, 3]) });
    // A bucket past the table's (not one this cfg writes) is not read.
    expect(parseFigureTable(line(`invoices:service:${LATENCY_BOUNDS_MS.length + 1}`, 1, 0))).toEqual([]);
  });

  it('revokes a loaded JWKS key its issuer no longer publishes (kid gone, or the same kid with other material), restores it when published again, changes nothing for an issuer it could not fetch, and names keys it has not loaded', () => {
    const loaded = [
      { id: 'issuer-1-0', issuer: 'idp', kid: 'a', pem: 'PEM-A' },
      { id: 'issuer-1-1', issuer: 'idp', kid: 'b', pem: 'PEM-B' },
      { id: 'issuer-2-0', issuer: 'other', kid: 'x', pem: 'PEM-X' },
    ];
    const all = new Set(loaded.map((k) => k.id));
    // kid b now names another key; c is new; "other" could not be fetched.
    const now = jwksChanges(loaded, { idp: [{ kid: 'a', pem: 'PEM-A' }, { kid: 'b', pem: 'PEM-B2' }, { kid: 'c', pem: 'PEM-C' }] }, all);
    expect(now.revoked.map((k) => k.id)).toEqual(['issuer-1-1']);
    expect(now.restored).toEqual([]);
    expect([...now.live]).toEqual(['issuer-1-0', 'issuer-2-0']);
    expect(now.unloaded).toEqual([{ issuer: 'idp', kid: 'b' }, { issuer: 'idp', kid: 'c' }]);
    // Already revoked: not revoked twice; published again: restored.
    const without = new Set(['issuer-1-0', 'issuer-2-0']);
    expect(jwksChanges(loaded, { idp: [{ kid: 'a', pem: 'PEM-A' }] }, without).revoked).toEqual([]);
    expect(jwksChanges(loaded, { idp: [{ kid: 'a', pem: 'PEM-A' }, { kid: 'b', pem: 'PEM-B' }] }, without).restored.map((k) => k.id)).toEqual(['issuer-1-1']);
    // An issuer that could not be fetched keeps its keys as they are, revoked ones included.
    expect([...jwksChanges(loaded, {}, without).live]).toEqual(['issuer-1-0', 'issuer-2-0']);
    // An empty set published: every key of that issuer is revoked.
    expect(jwksChanges(loaded, { idp: [] }, all).revoked.map((k) => k.id)).toEqual(['issuer-1-0', 'issuer-1-1']);
  });

  it('buckets latencies in latency.map as LATENCY_BOUNDS_MS does (integer ms, each bound in its own bucket)', () => {
    const config = resolveConfig({ legacy: { jwtSecret: generateSecret() }, gateway: { adminToken: generateSecret(), engine: 'haproxy' } });
    const out = renderHaproxy(config, { adminToken: config.gateway.adminToken!, issuers: issuersOf(config, config.legacy.jwtSecret!) }, { runDir: '/run/strangler', port: 5000, host: '127.0.0.1' });
    const ranges = out.files['latency.map'].trim().split('\n').map((l) => l.split(/[: ]/).map(Number));
    for (const ms of [0, 5, 6, 10, 11, 999, 1000, 10_000]) {
      const hit = ranges.find(([lo, hi]) => ms >= lo && ms <= hi);
      expect(hit?.[2], `${ms} ms`).toBe(bucketIndex(LATENCY_BOUNDS_MS, ms));
    }
    expect(ranges.some(([lo, hi]) => 10_001 >= lo && 10_001 <= hi)).toBe(false); // past the last bound: the map's default
  });

  it('renders the secrets only into the owner-only config, quoted; refuses a value with a line break', () => {
    const config = resolveConfig({ legacy: { jwtSecret: generateSecret() }, gateway: { adminToken: generateSecret(), engine: 'haproxy' } });
    const secrets = { adminToken: config.gateway.adminToken!, issuers: issuersOf(config, config.legacy.jwtSecret!) };
    const out = renderHaproxy(config, secrets, { runDir: '/run/strangler', port: 5000, host: '127.0.0.1' });
    expect(out.files['haproxy.cfg']).toContain(`jwt_verify(txn.jwt_alg,"${config.legacy.jwtSecret}")`);
    expect(out.files['strangler.lua']).not.toContain(config.legacy.jwtSecret!);
    expect(() => renderHaproxy(config, { ...secrets, adminToken: 'a\nb' }, { runDir: '/run/strangler', port: 5000, host: '127.0.0.1' })).toThrow(/line break/);
  });
});
