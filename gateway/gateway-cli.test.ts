import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { freePort, waitFor } from '../stack/ports.ts';
import { gatewayCliYaml, gatewayTestEnv, ROOT, testSecrets } from '../test/harness.ts';
import { liveGateways } from '../cutover/route-change.ts';
import { redisKeys } from './redis-keys.ts';

let env: Awaited<ReturnType<typeof gatewayTestEnv>>;
beforeAll(async () => {
  env = await gatewayTestEnv('gateway_cli', ['invoices']);
});
afterAll(async () => {
  await env?.cleanup();
});

it('strangler gateway --workers 2 --zone z-1 runs two processes on one port that both acknowledge the route table in that zone, and stops on SIGTERM', async () => {
  const port = await freePort();
  const file = join(env.dir, 'strangler.yaml');
  writeFileSync(file, stringify(await gatewayCliYaml(env, port, { heartbeatIntervalMs: 200 })));
  const child = spawn(process.execPath, [resolve(ROOT, 'bin/strangler.js'), 'gateway', '--workers', '2', '--zone', 'z-1', '--config', file], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, STRANGLER_LEGACY_JWT_SECRET: testSecrets.legacyJwtSecret, STRANGLER_ADMIN_TOKEN: testSecrets.adminToken },
  });
  let stderr = '';
  child.stderr.on('data', (c) => (stderr += c));
  const redis = new Redis(env.config.redis.url);
  try {
    await waitFor('two gateway workers to report', async () => (await liveGateways(redis, redisKeys(env.config.redis.keyPrefix), 2_000)).length === 2, 30_000, 100);
    const res = await fetch(`http://127.0.0.1:${port}/health`);
    expect(((await res.json()) as { server: string }).server).toBe('legacy');
    const pids = new Set((await liveGateways(redis, redisKeys(env.config.redis.keyPrefix), 2_000)).map((g) => g.pid));
    expect(pids.size).toBe(2);
    expect((await liveGateways(redis, redisKeys(env.config.redis.keyPrefix), 2_000)).map((g) => g.zone)).toEqual(['z-1', 'z-1']);
  } finally {
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    await redis.quit();
    expect(code, stderr).toBe(0);
  }
}, 60_000);
