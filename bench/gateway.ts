/**
 * `npm run bench:gateway`: gateway throughput and latency against baselines measured in the
 * same run on the same machine: the upstream direct, nginx as a reverse proxy (installed with
 * apt when missing and allowed), the bare node:http + undici proxy the gateway is built on (and
 * the same proxy sending the all-on gateway's headers, with none of its logic), and
 * the gateway bare, with every feature on, and with 2 workers (BENCH_TRACING=1: also with
 * tracing on, 10% and 100% of requests sampled, against all features on without it); the
 * HAProxy engine (strangler haproxy, one thread) bare and with routing + JWT + rate limit + canary.
 * Targets (the gateway issue): all features on ≥ 0.35× nginx's req/s, p99 ≤ 2× nginx's.
 * Issue 21: HAProxy all on ≥ 0.8× nginx's req/s and p99 ≤ 1.3× nginx's; the Node engine all on
 * ≥ 0.8× the node:http + undici floor's req/s and p99 ≤ 1.3× the floor's.
 * Every target runs up front and is measured in interleaved rounds (BENCH_ROUNDS × BENCH_SECONDS).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { SignJWT } from 'jose';
import pg from 'pg';
import { stringify } from 'yaml';
import { generateSecret } from '../core/config/secrets.ts';
import { commitRouteChange } from '../cutover/route-change.ts';
import { migrateControl } from '../migrations/control/index.ts';
import { LocalStack } from '../stack/index.ts';
import { freePort, isListening, waitFor } from '../stack/ports.ts';
import { ensureWrk, loadGenerator, measureRounds, printTable, roundRatio } from './load.ts';
import { aptInstall } from './apt.ts';

const ROOT = resolve(import.meta.dirname, '..');
const seconds = Number(process.env.BENCH_SECONDS ?? 4);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
/** BENCH_ONLY=<regex>: only the gateway rows whose name matches (the baselines always run). */
const only = process.env.BENCH_ONLY ? new RegExp(process.env.BENCH_ONLY, 'i') : null;
const children: ChildProcess[] = [];
const sinks: Server[] = [];
const say = (line: string) => process.stdout.write(`${line}\n`);

function start(cmd: string, args: string[]): ChildProcess {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  return child;
}

function findNginx(): string | null {
  for (const p of ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/bin/nginx']) if (existsSync(p)) return p;
  if (!aptInstall(['nginx-light'], 'the baseline', say)) return null;
  // The package starts the system's nginx; the bench runs its own.
  execFileSync('sh', ['-c', 'service nginx stop || true'], { stdio: 'ignore' });
  return existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : null;
}

async function main(): Promise<void> {
  ensureWrk(say);
  // The gateway rows' token (the headers floor's client sends it too, unread).
  const secret = generateSecret();
  const token = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('42').setIssuer('legacy').setExpirationTime('2h').sign(new TextEncoder().encode(secret));
  const dir = mkdtempSync(join(tmpdir(), 'bench-gw-'));
  const upstreamPort = await freePort();
  const upstream = start(process.execPath, ['--import', 'tsx', resolve(ROOT, 'bench/upstream-server.ts'), String(upstreamPort)]);
  await waitFor('upstream', () => isListening(upstreamPort), 20_000);
  // pid: whose CPU time per request the table shows (the process and its workers).
  const targets: Array<{ name: string; url: string; headers?: Record<string, string>; pid?: number }> = [{ name: 'direct to upstream', url: `http://127.0.0.1:${upstreamPort}/api/invoices`, pid: upstream.pid }];

  const nginxBin = findNginx();
  if (nginxBin) {
    const nginxPort = await freePort();
    writeFileSync(
      join(dir, 'nginx.conf'),
      `worker_processes 1; error_log ${dir}/nginx-error.log; pid ${dir}/nginx.pid;
events { worker_connections 1024; }
http { access_log off;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  upstream u { server 127.0.0.1:${upstreamPort}; keepalive 64; }
  server { listen 127.0.0.1:${nginxPort}; location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection ""; } } }\n`,
    );
    const nginx = start(nginxBin, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;']);
    await waitFor('nginx', () => isListening(nginxPort), 20_000);
    targets.push({ name: 'nginx (1 worker)', url: `http://127.0.0.1:${nginxPort}/api/invoices`, pid: nginx.pid });
  } else {
    say('nginx not available: its baseline is skipped');
  }

  // The floor of the HAProxy engine: HAProxy proxying with no rule at all (one thread, as nginx has one worker).
  if (existsSync('/usr/sbin/haproxy')) {
    const hxPort = await freePort();
    writeFileSync(
      join(dir, 'haproxy-floor.cfg'),
      `global\n  nbthread 1\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\nfrontend f\n  bind 127.0.0.1:${hxPort}\n  default_backend b\nbackend b\n  server u 127.0.0.1:${upstreamPort}\n`,
    );
    const hxFloor = start('/usr/sbin/haproxy', ['-db', '-f', join(dir, 'haproxy-floor.cfg')]);
    await waitFor('haproxy floor', () => isListening(hxPort), 20_000);
    targets.push({ name: 'haproxy, no rules (floor)', url: `http://127.0.0.1:${hxPort}/api/invoices`, pid: hxFloor.pid });
  }

  // The floor of the gateway's own stack (node:http + undici, nothing else), as a second baseline.
  const minPort = await freePort();
  const minProxy = start(process.execPath, ['--import', 'tsx', resolve(ROOT, 'bench/min-proxy.ts'), String(minPort), String(upstreamPort)]);
  await waitFor('minimal node proxy', () => isListening(minPort), 20_000);
  targets.push({ name: 'node:http + undici, no features', url: `http://127.0.0.1:${minPort}/api/invoices`, pid: minProxy.pid });
  // The same floor sending the all-on gateway's headers both ways, with none of its logic: the price of the headers alone.
  const minHeadersPort = await freePort();
  const minHeaders = start(process.execPath, ['--import', 'tsx', resolve(ROOT, 'bench/min-proxy.ts'), String(minHeadersPort), String(upstreamPort), '--headers']);
  await waitFor('minimal node proxy with headers', () => isListening(minHeadersPort), 20_000);
  targets.push({ name: "node:http + undici, the gateway's headers", url: `http://127.0.0.1:${minHeadersPort}/api/invoices`, headers: { authorization: `Bearer ${token}` }, pid: minHeaders.pid });

  const stack = await LocalStack.start({ postgres: { ephemeral: true } });
  try {
    const controlUrl = `${stack.postgres.baseUrl}/bench_control`;
    await stack.postgres.createDatabase('bench_control');
    await migrateControl(controlUrl, 'strangler');
    const client = new pg.Client({ connectionString: controlUrl });
    await client.connect();
    await commitRouteChange(client, 'strangler', [{ prefix: '/api/invoices', service: 'invoices', mode: 'service', weight: 0 }], { actor: 'bench', command: 'bench', outcome: 'applied' });
    // The HAProxy all-on row routes a canary (its users hashed to a side per request).
    await commitRouteChange(client, 'strangler', [{ prefix: '/api/orders', service: 'invoices', mode: 'canary', weight: 50 }], { actor: 'bench', command: 'bench', outcome: 'applied' });
    await client.end();

    const gateway = async (name: string, gw: Record<string, unknown>, workers = 1, headers?: Record<string, string>, o: { tracing?: Record<string, unknown>; engine?: 'node' | 'haproxy'; path?: string } = {}) => {
      const { tracing, engine = 'node', path = '/api/invoices' } = o;
      if (only && !only.test(name)) return;
      const port = await freePort();
      const file = join(dir, `${name.replace(/\W+/g, '-')}.yaml`);
      writeFileSync(
        file,
        stringify({
          postgres: { url: stack.postgres.baseUrl },
          redis: { url: stack.redisUrl, keyPrefix: `bench:${port}:` },
          legacy: { port: await freePort(), url: `http://127.0.0.1:${upstreamPort}`, jwtSecret: secret },
          control: { database: 'bench_control' },
          gateway: { port, snapshotFile: join(dir, `${port}.json`), adminToken: generateSecret(), ...gw },
          logLevel: 'error',
          ...(tracing ? { tracing } : {}),
          services: [{ name: 'invoices', prefix: '/api/invoices', port: await freePort(), url: `http://127.0.0.1:${upstreamPort}`, database: 'bench_invoices', order: 1 }],
        }),
      );
      const profile = process.env.BENCH_PROFILE ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_PROFILE] : [];
      // strangler haproxy: HAProxy (its pid a child of the agent's, so the CPU column counts both) and the agent.
      const args = engine === 'haproxy' ? ['haproxy', '--config', file, '--run-dir', join(dir, `haproxy-${port}`)] : ['gateway', '--config', file, '--workers', String(workers)];
      const child = start(process.execPath, [...profile, resolve(ROOT, 'bin/strangler.js'), ...args]);
      await waitFor(name, () => isListening(port), 30_000);
      await new Promise((r) => setTimeout(r, workers > 1 || engine === 'haproxy' ? 1500 : 300));
      targets.push({ name, url: `http://127.0.0.1:${port}${path}`, headers, pid: child.pid });
    };
    const limit = [{ prefix: '/api', limit: 1_000_000_000, windowMs: 60_000 }];
    await gateway('gateway, bare proxy', { protectedPrefixes: [], rateLimits: [] });
    if (process.env.BENCH_BREAKDOWN) {
      await gateway('gateway, + JWT only', { rateLimits: [] }, 1, { authorization: `Bearer ${token}` });
      await gateway('gateway, + rate limit only', { protectedPrefixes: [], rateLimits: limit });
    }
    await gateway('gateway, all features on', { rateLimits: limit }, 1, { authorization: `Bearer ${token}` });
    await gateway('gateway, all on, --workers 2', { rateLimits: limit }, 2, { authorization: `Bearer ${token}` });
    if (process.env.BENCH_TRACING) {
      // Tracing's cost: spans exported over OTLP/HTTP to a receiver that takes and drops them.
      const sinkPort = await freePort();
      const sink = createServer((req, res) => req.resume().on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}')));
      await new Promise<void>((ok) => sink.listen(sinkPort, '127.0.0.1', ok));
      sinks.push(sink);
      const endpoint = `http://127.0.0.1:${sinkPort}/v1/traces`;
      await gateway('gateway, all on + tracing, 10% sampled', { rateLimits: limit }, 1, { authorization: `Bearer ${token}` }, { tracing: { endpoint, sampleRatio: 0.1 } });
      await gateway('gateway, all on + tracing, every request', { rateLimits: limit }, 1, { authorization: `Bearer ${token}` }, { tracing: { endpoint, sampleRatio: 1 } });
    }
    // The HAProxy engine with one thread (as nginx has one worker): bare, and routing + JWT + rate limit + canary.
    const hx = { engine: 'haproxy', haproxy: { threads: 1 } };
    await gateway('haproxy, bare proxy', { ...hx, protectedPrefixes: [], rateLimits: [] }, 1, undefined, { engine: 'haproxy' });
    await gateway('haproxy, all on (+ canary)', { ...hx, rateLimits: limit }, 1, { authorization: `Bearer ${token}` }, { engine: 'haproxy', path: '/api/orders' });

    const results = await measureRounds(targets, { rounds, seconds });
    const nginx = results.find((r) => r.name === 'nginx (1 worker)');
    const floor = results.find((r) => r.name === 'node:http + undici, no features')!;
    const direct = results[0];
    say(`\ngateway bench: ${loadGenerator()}, ${rounds} interleaved rounds of ${seconds} s per target (medians), loopback, ${process.env.BENCH_NOTE ?? 'this machine'}\n`);
    printTable(results, { nginx, direct });
    say(`\nreq/s range over the rounds: ${results.map((r) => `${r.name} ${r.spread[0]}–${r.spread[1]}`).join('; ')}`);
    const full = results.find((r) => r.name === 'gateway, all features on');
    if (nginx && full) {
      say(`target: all features on ≥ 0.35× nginx req/s → ${roundRatio(full, nginx).toFixed(2)}×; p99 ≤ 2× nginx → ${roundRatio(full, nginx, 'p99').toFixed(2)}× (medians of the per-round ratios; of the medians: ${(full.p99 / Math.max(nginx.p99, 0.01)).toFixed(2)}×)`);
      say(`the floor of the stack (node:http + undici, no features): ${roundRatio(floor, nginx).toFixed(2)}× nginx req/s, p99 ${roundRatio(floor, nginx, 'p99').toFixed(2)}× nginx; all features on = ${roundRatio(full, floor).toFixed(2)}× the floor's req/s`);
    }
    if (full) for (const traced of results.filter((r) => r.name.includes('tracing'))) {
      say(`${traced.name}: ${roundRatio(traced, full).toFixed(2)}× the req/s of all features on without tracing, p99 ${roundRatio(traced, full, 'p99').toFixed(2)}×${traced.cpuUs !== undefined && full.cpuUs !== undefined ? `, CPU per request +${traced.cpuUs - full.cpuUs} µs` : ''}`);
    }
    const hxFull = results.find((r) => r.name === 'haproxy, all on (+ canary)');
    const hxFloor = results.find((r) => r.name === 'haproxy, no rules (floor)');
    if (nginx && hxFull) {
      say(`target (issue 21): HAProxy all on ≥ 0.8× nginx req/s → ${roundRatio(hxFull, nginx).toFixed(2)}×; p99 ≤ 1.3× nginx → ${roundRatio(hxFull, nginx, 'p99').toFixed(2)}×`);
      if (hxFloor) say(`HAProxy with no rules: ${roundRatio(hxFloor, nginx).toFixed(2)}× nginx req/s; HAProxy all on = ${roundRatio(hxFull, hxFloor).toFixed(2)}× that floor's req/s, p99 ${roundRatio(hxFull, hxFloor, 'p99').toFixed(2)}×`);
    }
    if (!full) return;
    say(`target (issue 21, the Node engine on its own floor): all features on ≥ 0.8× the floor's req/s → ${roundRatio(full, floor).toFixed(2)}×; p99 ≤ 1.3× the floor's → ${roundRatio(full, floor, 'p99').toFixed(2)}×`);
    const headersFloor = results.find((r) => r.name === "node:http + undici, the gateway's headers");
    if (headersFloor) {
      say(`the floor sending the gateway's headers, no logic: ${roundRatio(headersFloor, floor).toFixed(2)}× the bare floor's req/s, p99 ${roundRatio(headersFloor, floor, 'p99').toFixed(2)}×; all features on = ${roundRatio(full, headersFloor).toFixed(2)}× its req/s, p99 ${roundRatio(full, headersFloor, 'p99').toFixed(2)}×`);
    }
    if (full.cpuUs !== undefined && floor.cpuUs !== undefined) {
      say(`CPU per request: all features on ${full.cpuUs} µs, the floor ${floor.cpuUs} µs${nginx?.cpuUs !== undefined ? `, nginx ${nginx.cpuUs} µs` : ''} (the gateway's own work: ${full.cpuUs - floor.cpuUs} µs)`);
    }
  } finally {
    for (const s of sinks) s.close();
    await stack.stop();
  }
}

try {
  await main();
} finally {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
}
