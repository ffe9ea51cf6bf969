import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { ResolvedConfig } from '../core/config/load.ts';
import { silentLogger } from '../core/logger.ts';
import { startGateway, type RunningGateway } from '../gateway/start.ts';
import { freePort, waitFor } from '../stack/ports.ts';
import { adminHeaders, configYaml, createTestDatabase, dropTestDatabase, gatewayTestEnv, legacyTestConfig, ROOT } from './harness.ts';
import { seedLegacy } from './reference.ts';
import { routeWriter } from './routes.ts';

/**
 * docs/grafana/strangler.json against the metrics the toolkit really exports: every metric and
 * label a panel (or a dashboard variable) queries must be on the /metrics of a running gateway
 * or sync worker. A renamed metric or label fails here, not on someone's wall display.
 */
const DASHBOARD = resolve(ROOT, 'docs/grafana/strangler.json');
/** Labels Prometheus adds to every scraped series (the target's). */
const TARGET_LABELS = new Set(['instance', 'job']);

interface Query {
  where: string;
  expr: string;
  legend?: string;
}

/** Every PromQL query of a dashboard: panel targets and label_values() of variables. */
function dashboardQueries(dashboard: any): Query[] {
  const out: Query[] = [];
  const walk = (panels: any[]) => {
    for (const p of panels ?? []) {
      for (const t of p.targets ?? []) out.push({ where: `panel "${p.title}" ${t.refId}`, expr: t.expr, legend: t.legendFormat });
      walk(p.panels);
    }
  };
  walk(dashboard.panels);
  for (const v of dashboard.templating?.list ?? []) {
    const q = typeof v.query === 'string' ? v.query : v.query?.query;
    const m = /^label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*(\w+)\s*\)$/.exec(q ?? '');
    if (v.type === 'query') out.push(m ? { where: `variable $${v.name}`, expr: `${m[1]}`, legend: `{{${m[2]}}}` } : { where: `variable $${v.name}`, expr: `unparsed: ${q}` });
  }
  return out;
}

/** Series names and their label names in a Prometheus text exposition (samples only: a family without a series has no labels to query). */
function exposedSeries(text: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+\S+/.exec(line);
    if (!m || line.startsWith('#')) continue;
    const labels = out.get(m[1]) ?? new Set<string>();
    for (const l of (m[2] ?? '').matchAll(/(\w+)="/g)) labels.add(l[1]);
    out.set(m[1], labels);
  }
  return out;
}

const FUNCTIONS = new Set(['sum', 'min', 'max', 'avg', 'count', 'rate', 'increase', 'irate', 'histogram_quantile', 'by', 'without', 'on', 'ignoring', 'label_values', 'abs', 'clamp_min', 'clamp_max', 'topk', 'bottomk', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset']);

/** What a query asks of the exports: problems, one line each (empty: every metric and label it names exists). */
function problemsOf(q: Query, series: Map<string, Set<string>>): string[] {
  const problems: string[] = [];
  if (q.expr.startsWith('unparsed: ')) return [`${q.where}: cannot read ${q.expr}`];
  // Strip strings ("5xx", "$prefix") and range selectors ([$__rate_interval]) before reading names.
  const bare = q.expr.replace(/"(?:[^"\\]|\\.)*"/g, '""').replace(/\[[^\]]*\]/g, '');
  // What is left once the grouping clauses are out: functions, numbers and metric selectors.
  const selectors = [...bare.replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '').matchAll(/(?<![\w.])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?/g)].filter((m) => !FUNCTIONS.has(m[1]));
  const used: Array<Set<string>> = [];
  for (const m of selectors) {
    const labels = series.get(m[1]);
    if (!labels) {
      problems.push(`${q.where}: metric ${m[1]} is not exported`);
      continue;
    }
    used.push(labels);
    for (const l of (m[2] ?? '').matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)) if (!labels.has(l[1]) && !TARGET_LABELS.has(l[1])) problems.push(`${q.where}: ${m[1]} has no label ${l[1]}`);
  }
  if (used.length === 0 && problems.length === 0) problems.push(`${q.where}: names no metric`);
  const onAll = (l: string) => TARGET_LABELS.has(l) || (used.length > 0 && used.every((s) => s.has(l)));
  const grouped: string[] = [];
  for (const g of bare.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)) {
    for (const l of g[1].split(',').map((x) => x.trim()).filter(Boolean)) {
      grouped.push(l);
      if (!onAll(l)) problems.push(`${q.where}: grouped by ${l}, which its metrics do not all have`);
    }
  }
  const aggregated = /\b(?:sum|min|max|avg|count)\b/.test(bare);
  for (const m of (q.legend ?? '').matchAll(/\{\{\s*(\w+)\s*\}\}/g)) {
    const l = m[1];
    if (!onAll(l)) problems.push(`${q.where}: the legend shows ${l}, which its metrics do not have`);
    else if (aggregated && !grouped.includes(l)) problems.push(`${q.where}: the legend shows ${l}, which the aggregation drops`);
  }
  return problems;
}

describe('the dashboard checker', () => {
  const series = exposedSeries('# HELP x y\nstrangler_a_total{service="s",outcome="match"} 1\nstrangler_b_bucket{le="0.1",prefix="/"} 2\n');
  it('accepts a query whose metric and labels are exported', () => {
    expect(problemsOf({ where: 'p', expr: 'sum by (service) (rate(strangler_a_total{outcome="mismatch"}[$__rate_interval]))', legend: '{{service}}' }, series)).toEqual([]);
    expect(problemsOf({ where: 'p', expr: 'histogram_quantile(0.99, sum by (le, prefix) (rate(strangler_b_bucket{prefix=~"$prefix"}[5m])))', legend: '{{prefix}}' }, series)).toEqual([]);
    expect(problemsOf({ where: 'p', expr: 'strangler_a_total', legend: '{{service}} on {{instance}}' }, series)).toEqual([]);
  });
  it('names a metric, a matcher label, a grouping label or a legend label that is not exported', () => {
    expect(problemsOf({ where: 'p', expr: 'rate(strangler_c_total[5m])' }, series)).toEqual(['p: metric strangler_c_total is not exported']);
    expect(problemsOf({ where: 'p', expr: 'strangler_a_total{route="x"}' }, series)).toEqual(['p: strangler_a_total has no label route']);
    expect(problemsOf({ where: 'p', expr: 'sum by (prefix) (strangler_a_total)', legend: '{{prefix}}' }, series)).toEqual(['p: grouped by prefix, which its metrics do not all have', 'p: the legend shows prefix, which its metrics do not have']);
    expect(problemsOf({ where: 'p', expr: 'sum by (service) (strangler_a_total)', legend: '{{outcome}}' }, series)).toEqual(['p: the legend shows outcome, which the aggregation drops']);
    expect(problemsOf({ where: 'p', expr: 'strangler_a_total / on (service) strangler_d' }, series)).toEqual(['p: metric strangler_d is not exported']);
  });
});

describe('docs/grafana/strangler.json on a running stack', () => {
  let env: Awaited<ReturnType<typeof gatewayTestEnv>>;
  let gw: RunningGateway;
  let routes: ReturnType<typeof routeWriter>;
  let worker: ChildProcess | undefined;
  let syncCleanup: (() => Promise<void>) | undefined;
  let syncMetrics = '';

  beforeAll(async () => {
    // A sync worker (the command line's own, with its metrics port) streaming auth's tables.
    const t = await legacyTestConfig('grafana_sync');
    await seedLegacy(t.config.legacy.databaseUrl, { users: 3, invoices: 5, seed: 3 });
    const targetUrl = await createTestDatabase('grafana_auth');
    const dir = mkdtempSync(join(tmpdir(), 'grafana-'));
    const file = join(dir, 'strangler.yaml');
    writeFileSync(file, stringify(configYaml({ ...t.config, services: t.config.services.map((s) => (s.name === 'auth' ? { ...s, databaseUrl: targetUrl } : s)) })));
    const port = await freePort();
    worker = spawn(process.execPath, [resolve(ROOT, 'bin/strangler.js'), 'sync', 'start', 'auth', '--config', file, '--metrics-port', String(port)], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    worker.stderr!.on('data', (d) => (stderr += d));
    syncCleanup = async () => {
      if (worker && worker.exitCode === null) {
        const exited = new Promise((ok) => worker!.once('exit', ok));
        worker.kill('SIGTERM');
        await exited;
      }
      const { runCli } = await import('./cli.ts');
      await runCli(file, ['sync', 'cleanup', 'auth'], { cwd: dir });
      await dropTestDatabase(targetUrl);
      await t.cleanup();
    };
    // The lag gauge is set once the worker has measured it.
    await waitFor('the sync worker to report its lag', async () => {
      if (worker!.exitCode !== null) throw new Error(`sync start exited ${worker!.exitCode}: ${stderr}`);
      syncMetrics = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text(), () => '');
      return /^strangler_sync_lag_bytes\{/m.test(syncMetrics);
    }, 60_000);

    // A gateway whose traffic makes every series the dashboard reads: requests on both sides, a
    // shadowed prefix, a service with two instances that refuse connections (retries, failures,
    // an ejection, fallbacks to legacy), and a rate limit that refuses.
    env = await gatewayTestEnv('grafana', ['auth', 'invoices']);
    const dead = [`http://127.0.0.1:${await freePort()}`, `http://127.0.0.1:${await freePort()}`];
    const config: ResolvedConfig = {
      ...env.config,
      gateway: {
        ...env.config.gateway,
        rateLimits: [{ prefix: '/', limit: 100_000, windowMs: 60_000 }, { prefix: '/api/templates', limit: 1, windowMs: 60_000 }],
        outlierDetection: { ...env.config.gateway.outlierDetection, consecutiveFailures: 1 },
      },
      services: env.config.services.map((s) => (s.name === 'auth' ? { ...s, url: dead[0], instances: [dead[1]], healthCheck: { ...s.healthCheck, enabled: false } } : s)),
    };
    gw = await startGateway(config, { port: 0, instanceId: 'gw-grafana', logger: silentLogger });
    routes = routeWriter(env.config);
  }, 120_000);

  afterAll(async () => {
    await gw?.stop();
    await routes?.close();
    await env?.cleanup();
    await syncCleanup?.();
  });

  it('queries only metrics and labels that a gateway and a sync worker export', async () => {
    await routes.set({ prefix: '/api/invoices', mode: 'shadow' }, { prefix: '/api/auth', mode: 'service' });
    const token = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('1').setIssuer('legacy').setIssuedAt().setExpirationTime('1h').sign(new TextEncoder().encode(env.config.legacy.jwtSecret));
    const get = (path: string) => fetch(`${gw.url}${path}`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.text());
    await get('/api/invoices');
    for (let i = 0; i < 3; i++) await get('/api/auth/me');
    await get('/api/templates');
    await get('/api/templates');
    let gatewayMetrics = '';
    await waitFor('the shadow comparison to be counted', async () => {
      gatewayMetrics = await fetch(`${gw.url}/metrics`, { headers: adminHeaders }).then((r) => r.text());
      return /^strangler_gateway_shadow_total\{/m.test(gatewayMetrics);
    }, 15_000);

    const series = exposedSeries(`${gatewayMetrics}\n${syncMetrics}`);
    const queries = dashboardQueries(JSON.parse(readFileSync(DASHBOARD, 'utf8')));
    expect(queries.length).toBeGreaterThan(15);
    expect(queries.flatMap((q) => problemsOf(q, series))).toEqual([]);
  });
});
