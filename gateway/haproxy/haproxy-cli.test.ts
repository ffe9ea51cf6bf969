import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { liveGateways } from '../../cutover/route-change.ts';
import { freePort, waitFor } from '../../stack/ports.ts';
import { runCli, spawnCli } from '../../test/cli.ts';
import { gatewayCliYaml, gatewayTestEnv, testSecrets } from '../../test/harness.ts';
import { redisKeys } from '../redis-keys.ts';

/** Issue 21: `strangler haproxy` as people run it: HAProxy and its agent, acknowledged like a gateway; --render-only for their own HAProxy. */

let env: Awaited<ReturnType<typeof gatewayTestEnv>>;
const secrets = { STRANGLER_LEGACY_JWT_SECRET: testSecrets.legacyJwtSecret, STRANGLER_ADMIN_TOKEN: testSecrets.adminToken };
beforeAll(async () => {
  env = await gatewayTestEnv('haproxy_cli', ['invoices']);
});
afterAll(async () => {
  await env?.cleanup();
});

async function configFile(port: number, name: string): Promise<string> {
  const file = join(env.dir, name);
  writeFileSync(file, stringify(await gatewayCliYaml(env, port, { engine: 'haproxy', heartbeatIntervalMs: 200, haproxy: { runDir: join(env.dir, `hx-${port}`), threads: 1 } })));
  return file;
}

it('strangler haproxy runs HAProxy and its agent: serving on gateway.port, live and acknowledged as engine haproxy, both gone after SIGTERM', async () => {
  const port = await freePort();
  const { child, result } = spawnCli(await configFile(port, 'haproxy.yaml'), ['haproxy'], { env: secrets });
  const redis = new Redis(env.config.redis.url);
  const keys = redisKeys(env.config.redis.keyPrefix);
  try {
    await waitFor('the HAProxy engine live and acknowledged', async () => (await liveGateways(redis, keys, 2_000)).some((g) => g.engine === 'haproxy' && g.version >= 0), 30_000, 100);
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(res.status).toBe(200);
    child.kill('SIGTERM');
    const exit = await result;
    expect(exit.code).toBe(0);
    const pid = Number(/\(pid (\d+)\)/.exec(exit.stderr)?.[1]);
    expect(pid).toBeGreaterThan(0);
    expect(() => process.kill(pid, 0)).toThrow(); // HAProxy stopped with its agent
    expect(await liveGateways(redis, keys, 2_000)).toEqual([]);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    redis.disconnect();
  }
});

it('strangler haproxy --render-only prints haproxy.cfg; --out without --render-only is refused with what to do', async () => {
  const file = await configFile(await freePort(), 'render.yaml');
  const rendered = await runCli(file, ['haproxy', '--render-only'], { env: secrets });
  expect(rendered.code).toBe(0);
  expect(rendered.stdout).toMatch(/^frontend strangler$/m);
  expect(rendered.stdout).toMatch(/^backend svc_invoices$/m);
  const refused = await runCli(file, ['haproxy', '--out', env.dir], { env: secrets });
  expect(refused.code).toBe(2);
  expect(refused.stderr).toMatch(/--out goes with --render-only/);
});

it('an HAProxy whose agent died says so on /healthz (503: its routes may be stale), so a balancer stops sending to it', async () => {
  const port = await freePort();
  const { child, result } = spawnCli(await configFile(port, 'orphan.yaml'), ['haproxy'], { env: secrets });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  let pid = 0;
  try {
    await waitFor('HAProxy started', async () => (pid = Number(/\(pid (\d+)\)/.exec(stderr)?.[1] ?? 0)) > 0, 30_000, 100);
    await waitFor('/healthz 200 while the agent runs', async () => (await fetch(`http://127.0.0.1:${port}/healthz`)).status === 200, 10_000, 100);
    child.kill('SIGKILL'); // the agent dies; its HAProxy, orphaned, goes on
    await result;
    expect(() => process.kill(pid, 0)).not.toThrow();
    await waitFor('/healthz 503 once the agent is silent', async () => (await fetch(`http://127.0.0.1:${port}/healthz`)).status === 503, 15_000, 200);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    if (pid) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
});
