import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResolvedConfig } from '../../core/config/load.ts';
import { openCutover } from '../../cutover/executor.ts';
import { analyticsCutoverEnv } from '../../test/analytics-cutover.ts';
import { haproxyDataPlane, nodeDataPlane, type RunningEngine } from '../../test/conformance.ts';
import { canaryBucket, onServiceSide } from '../canary.ts';
import { readRouteFigures } from '../metrics.ts';
import { waitFor } from '../../stack/ports.ts';

/**
 * Issue 21, done when: one prefix migrated through HAProxy with a real stack (control database,
 * Redis, the sync engine, HAProxy and its agent): shadow refused while no gateway can mirror,
 * shadow on a Node gateway beside HAProxy, then canary, switch and rollback, each acknowledged by
 * HAProxy and served by it as the route says.
 */

const PREFIX = '/api/analytics';
let stack: Awaited<ReturnType<typeof analyticsCutoverEnv>>;
let env: Awaited<ReturnType<typeof analyticsCutoverEnv>>['env'];
let config: ResolvedConfig;
let haproxy: RunningEngine;
let ctl: Awaited<ReturnType<typeof openCutover>>;

const token = (sub: string) => new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setIssuer('legacy').setExpirationTime('1h').sign(new TextEncoder().encode(config.legacy.jwtSecret));

/** Which side served each user's request through `plane` (both answer the same, as after a good sync: told apart by what each saw). */
async function sides(plane: RunningEngine, users: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const u of users) {
    const path = `${PREFIX}/totals-by-status?user=${u}&n=${Math.random()}`;
    const res = await fetch(`${plane.url}${path}`, { headers: { authorization: `Bearer ${await token(u)}` } });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    out.push(env.upstreams.analytics.seen.some((s) => s.url === path) ? 'analytics' : env.legacy.seen.some((s) => s.url === path) ? 'legacy' : 'nobody');
  }
  return out;
}

beforeAll(async () => {
  stack = await analyticsCutoverEnv('hx_migration', PREFIX);
  ({ env, config } = stack);
  haproxy = await haproxyDataPlane.engine(config, 'hx-migration');
  ctl = await openCutover(config, 'test-operator');
}, 60_000);

afterAll(async () => {
  await haproxy?.stop();
  await ctl?.close();
  await stack?.cleanup();
});

describe('a prefix migrated through HAProxy (issue 21)', () => {
  it("sync → shadow (on a Node gateway; refused while only HAProxy runs) → canary 20 → switch (its analysis on HAProxy's figures) → rollback, each acknowledged and served by HAProxy", async () => {
    const users = Array.from({ length: 60 }, (_, i) => `u${i}`);
    expect(await sides(haproxy, users.slice(0, 5))).toEqual(Array(5).fill('legacy'));
    expect((await ctl.cutover.change(PREFIX, { kind: 'sync' })).to.phase).toBe('syncing');

    // Shadow: HAProxy cannot mirror, so with HAProxy alone the step is refused, saying what to run.
    await expect(ctl.cutover.change(PREFIX, { kind: 'shadow' })).rejects.toThrow(/no live gateway can shadow: hx-migration runs the HAProxy engine.*strangler gateway/);
    const node = await nodeDataPlane.engine(config, 'gw-shadow');
    try {
      const shadow = await ctl.cutover.change(PREFIX, { kind: 'shadow' });
      expect(shadow.propagation).toMatchObject({ acknowledged: 2, live: 2, complete: true });
      expect(await sides(haproxy, users.slice(0, 5))).toEqual(Array(5).fill('legacy'));
      // The Node gateway mirrors and compares: enough samples for the canary's preflight.
      const keys = ctl.cutover.probe(0).keys;
      for (let i = 0; i < 20 && Number((await ctl.redis.hgetall(keys.shadowCounts('analytics'))).match ?? 0) < 25; i++) await sides(node, users.slice(0, 10));
    } finally {
      await node.stop();
    }

    const canary = await ctl.cutover.change(PREFIX, { kind: 'canary', weight: 20 });
    expect(canary.propagation).toMatchObject({ acknowledged: 1, live: 1, complete: true });
    expect(await sides(haproxy, users)).toEqual(users.map((u) => (onServiceSide(canaryBucket(u, 'analytics'), 20) ? 'analytics' : 'legacy')));
    // The canary analysis of the switch reads the figures HAProxy counted (its agent puts them in Redis).
    const more = Array.from({ length: 200 }, (_, i) => `v${i}`);
    await sides(haproxy, more);
    const onService = users.concat(more).filter((u) => onServiceSide(canaryBucket(u, 'analytics'), 20)).length;
    const keys = ctl.cutover.probe(0).keys;
    await waitFor('HAProxy figures in Redis', async () => (await readRouteFigures(ctl.redis, keys, 'analytics', 'service', Date.now() - 60_000, Date.now() + 5_000)).requests >= onService, 10_000, 100);

    const full = await ctl.cutover.change(PREFIX, { kind: 'full' });
    expect(full.to.phase).toBe('switched');
    expect(full.propagation).toMatchObject({ acknowledged: 1, complete: true });
    expect(await sides(haproxy, users.slice(0, 10))).toEqual(Array(10).fill('analytics'));

    const back = await ctl.cutover.rollback(PREFIX, 'test: back to legacy');
    expect(back.to.phase).toBe('rolled-back');
    expect(back.propagation).toMatchObject({ acknowledged: 1, complete: true });
    expect(await sides(haproxy, users.slice(0, 10))).toEqual(Array(10).fill('legacy'));
  });
});
