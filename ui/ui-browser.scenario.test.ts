import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { ResolvedConfig } from '../core/config/load.ts';
import { silentLogger } from '../core/logger.ts';
import { startGateway, type RunningGateway } from '../gateway/start.ts';
import { cleanupPipeline } from '../migrations/sync/status.ts';
import { recordVerification, verifyPipeline } from '../migrations/sync/verify.ts';
import { SyncWorker } from '../migrations/sync/worker.ts';
import { freePort, waitFor } from '../stack/ports.ts';
import { runCli, spawnCli, writeConfig } from '../test/cli.ts';
import { createTestDatabase, dropTestDatabase, gatewayTestEnv, legacyTestConfig, ROOT, testSecrets } from '../test/harness.ts';
import { seedLegacy } from '../test/reference.ts';

/**
 * `strangler ui` in a real browser (Debian's chromium driven by playwright-core, no browser
 * download) against a real stack: Postgres and Redis of the harness, a forward sync, two
 * gateways, the control plane. A cutover made at the CLI appears on the open page without a
 * reload; a rollback made on the page is what the CLI's status then says; no action goes
 * through without the admin token. Screenshots go to a temporary folder, or to docs/images
 * with UPDATE_SCREENSHOTS=1.
 */
const CHROMIUM = process.env.STRANGLER_CHROMIUM ?? '/usr/bin/chromium';
const PREFIX = '/api/analytics';
const SHOTS = process.env.UPDATE_SCREENSHOTS === '1' ? join(ROOT, 'docs', 'images') : mkdtempSync(join(tmpdir(), 'strangler-ui-shots-'));

let env: Awaited<ReturnType<typeof gatewayTestEnv>>;
let legacyCleanup: () => Promise<void>;
let analyticsDb: string;
let otherDbs: string[] = [];
let config: ResolvedConfig;
let configFile: string;
let worker: SyncWorker;
const gateways: RunningGateway[] = [];
let ui: ReturnType<typeof spawnCli>;
let uiUrl: string;
let browser: Browser;
let page: Page;

const token = (sub: string) => new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setIssuer('legacy').setExpirationTime('1h').sign(new TextEncoder().encode(config.legacy.jwtSecret));

/** Requests through both gateways, spread over users, then the gateways' figures flushed. */
async function traffic(n: number, path = `${PREFIX}/totals-by-status`): Promise<void> {
  for (let i = 0; i < n; i++) {
    const res = await fetch(`${gateways[i % 2].url}${path}`, { headers: { authorization: `Bearer ${await token(`u${i % 97}`)}` } });
    await res.arrayBuffer();
  }
  await Promise.all(gateways.map((g) => g.gateway.figures.flush()));
}

const strangler = (...args: string[]) => runCli(configFile, args);
const cell = (name: string) => page.locator(`tr[data-prefix="${PREFIX}"] td.${name}`);

beforeAll(async () => {
  // Every service has an instance to report; analytics is the one that moves.
  env = await gatewayTestEnv('ui_browser', ['auth', 'invoices', 'templates', 'ocr', 'analytics', 'chat']);
  const legacy = await legacyTestConfig('ui_browser_legacy');
  legacyCleanup = legacy.cleanup;
  await seedLegacy(legacy.config.legacy.databaseUrl, { users: 3, invoices: 40, seed: 5 });
  analyticsDb = await createTestDatabase('ui_browser_analytics');
  // The other services' databases exist and have no sync yet (their pipelines: not started).
  otherDbs = await Promise.all(env.config.services.map((s) => createTestDatabase(`ui_browser_${s.name}`)));
  // The service answers like legacy, except for one path: a real mismatch for the diff samples.
  env.legacy.override.set(`${PREFIX}/by-month`, () => ({ status: 200, body: { months: [{ month: '2026-11', total: '120.50', invoices: 4 }] } }));
  env.upstreams.analytics.override.set(`${PREFIX}/by-month`, () => ({ status: 200, body: { months: [{ month: '2026-11', total: 120.5, invoices: 4 }] } }));
  const same = { status: 200, body: { items: [{ status: 'paid', invoices: 12, total: '1450.00' }, { status: 'open', invoices: 3, total: '310.00' }] } };
  env.legacy.override.set(PREFIX, () => same);
  env.upstreams.analytics.override.set(PREFIX, () => same);
  config = {
    ...env.config,
    legacy: { ...env.config.legacy, databaseUrl: legacy.config.legacy.databaseUrl },
    services: env.config.services.map((s, i) => (s.name === 'analytics' ? { ...s, databaseUrl: analyticsDb, dependsOn: [] } : { ...s, databaseUrl: otherDbs[i] })),
  };
  worker = new SyncWorker({ config, service: config.services.find((s) => s.name === 'analytics')!, logger: silentLogger });
  await worker.start();
  await recordVerification(analyticsDb, await verifyPipeline({ sourceUrl: config.legacy.databaseUrl, targetUrl: analyticsDb, plan: worker.plan! }));
  gateways.push(await startGateway(config, { port: 0, instanceId: 'gw-east' }), await startGateway(config, { port: 0, instanceId: 'gw-west' }));
  configFile = writeConfig(env.dir, config);
  const port = await freePort();
  ui = spawnCli(configFile, ['ui', '--port', String(port), '--refresh', '500ms', '--actor', 'wall-display'], { env: { STRANGLER_ADMIN_TOKEN: testSecrets.adminToken } });
  uiUrl = `http://127.0.0.1:${port}`;
  await waitFor('strangler ui to answer', () => fetch(`${uiUrl}/api/state`).then((r) => r.ok, () => false), 60_000, 200);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  page = await browser.newPage({ viewport: { width: 1366, height: 768 } });
}, 180_000);

afterAll(async () => {
  await browser?.close();
  if (ui && ui.child.exitCode === null) {
    ui.child.kill('SIGTERM');
    await ui.result;
  }
  for (const g of gateways) await g.stop();
  await worker?.stop();
  const analytics = config?.services.find((s) => s.name === 'analytics');
  if (analytics) await cleanupPipeline(config, analytics).catch(() => undefined);
  for (const db of [analyticsDb, ...otherDbs]) if (db) await dropTestDatabase(db).catch(() => undefined);
  await legacyCleanup?.();
  await env?.cleanup();
});

it('shows a cutover made at the CLI without a reload, rolls back from the page with the token, and the CLI agrees', async () => {
  await page.goto(uiUrl);
  await expect.poll(() => cell('phase').textContent(), { timeout: 20_000 }).toBe('legacy');
  // A mark in the page's memory: a reload would lose it.
  await page.evaluate(() => ((globalThis as unknown as { mark: string }).mark = 'same page'));

  expect((await strangler('cutover', PREFIX, '--sync')).code).toBe(0);
  await expect.poll(() => cell('phase').textContent(), { timeout: 20_000 }).toBe('syncing');
  await expect.poll(() => page.locator('[data-pipeline="analytics forward"]').textContent(), { timeout: 20_000 }).toMatch(/streaming.*rows applied/);

  const shadow = await strangler('cutover', PREFIX, '--shadow');
  expect(shadow.code, shadow.stderr).toBe(0);
  await expect.poll(() => cell('mode').textContent(), { timeout: 20_000 }).toBe('shadow');
  await traffic(1, `${PREFIX}/by-month`);
  // Enough comparisons that the one mismatch stays under the canary's 1% limit, as the page counts them.
  const matched = async () => Number(/(\d+) matched/.exec((await page.locator(`[data-shadow="${PREFIX}"] .figures`).textContent().catch(() => null)) ?? '')?.[1] ?? 0);
  for (let i = 0; i < 20 && (await matched()) < 150; i++) await traffic(20);
  await expect.poll(matched, { timeout: 20_000 }).toBeGreaterThanOrEqual(150);
  // The mismatch, side by side: legacy's total as a string, the service's as a number.
  const sample = page.locator(`[data-shadow="${PREFIX}"] .sample`).first();
  await expect.poll(() => sample.textContent(), { timeout: 20_000 }).toContain('GET /api/analytics/by-month');
  expect(await sample.locator('.side-by-side pre').nth(0).textContent()).toContain('"total": "120.50"');
  expect(await sample.locator('.side-by-side pre').nth(1).textContent()).toContain('"total": 120.5');

  const canary = await strangler('cutover', PREFIX, '--canary', '25');
  expect(canary.code, canary.stderr).toBe(0);
  await expect.poll(() => cell('weight').textContent(), { timeout: 20_000 }).toBe('25%');
  expect(await cell('phase').textContent()).toBe('canary');
  await expect.poll(() => cell('gateways').textContent(), { timeout: 20_000 }).toMatch(/^2\/2 @v\d+ gw-east v\d+gw-west v\d+$/);
  await traffic(60);
  await expect.poll(() => page.locator(`[data-canary="${PREFIX}"]`).textContent(), { timeout: 20_000 }).toMatch(/last: 0\.00% [\d.]+ ms vs 0\.00% [\d.]+ ms/);
  expect(await page.evaluate(() => (globalThis as unknown as { mark?: string }).mark)).toBe('same page');

  // Laptop and wall display: the page fits the width (no sideways scrolling) on both.
  const overflow = () => page.evaluate<number>('document.documentElement.scrollWidth - document.documentElement.clientWidth');
  mkdirSync(SHOTS, { recursive: true });
  expect(await overflow()).toBe(0);
  await page.screenshot({ path: join(SHOTS, 'ui-laptop.png') });
  await page.setViewportSize({ width: 1920, height: 1080 });
  expect(await overflow()).toBe(0);
  await page.screenshot({ path: join(SHOTS, 'ui-wall.png') });
  await page.setViewportSize({ width: 1366, height: 768 });

  // Without the token: refused, shown as the CLI would say it, and nothing changes.
  await page.selectOption('#action-prefix', PREFIX);
  await page.fill('#action-reason', 'canary users report slow totals');
  await page.click('#rollback');
  await expect.poll(() => page.locator('#action-result').textContent(), { timeout: 20_000 }).toMatch(/error \[UNAUTHENTICATED\]: promote and rollback need the admin token[\s\S]*\(exit 2, as the CLI\)/);
  const direct = await page.evaluate(async (p) => (await fetch('/api/actions/rollback', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prefix: p, reason: 'no token' }) })).status, PREFIX);
  expect(direct).toBe(401);
  expect(await cell('phase').textContent()).toBe('canary');

  // With the token: the control plane's rollback, acknowledged by both gateways.
  await page.fill('#action-token', testSecrets.adminToken);
  await page.click('#rollback');
  await expect.poll(() => page.locator('#action-result').textContent(), { timeout: 30_000 }).toMatch(/^rollback \/api\/analytics \(analytics\): canary 25% → rolled-back\n[\s\S]*applied on 2\/2 gateways in \d+ ms[\s\S]*\(exit 0, as the CLI\)$/);
  await expect.poll(() => cell('phase').textContent(), { timeout: 20_000 }).toBe('rolled-back');
  expect(await cell('mode').textContent()).toBe('legacy');
  await expect.poll(() => page.locator('#audit li').first().textContent(), { timeout: 20_000 }).toMatch(/rollback \/api\/analytics canary → rolled-back applied v\d+ by wall-display \(strangler ui\)“canary users report slow totals”/);
  await page.screenshot({ path: join(SHOTS, 'ui-rolled-back.png'), fullPage: true });

  // The CLI's status says the same.
  const status = await strangler('status', '--json');
  expect(status.code, status.stderr).toBe(0);
  expect(JSON.parse(status.stdout).find((r: { prefix: string }) => r.prefix === PREFIX)).toMatchObject({ phase: 'rolled-back', mode: 'legacy', gateways: { live: 2, acknowledged: 2 } });
  const history = await strangler('history', '--json');
  expect(JSON.parse(history.stdout)[0]).toMatchObject({ command: 'rollback', actor: 'wall-display (strangler ui)', reason: 'canary users report slow totals', outcome: 'applied' });
});
