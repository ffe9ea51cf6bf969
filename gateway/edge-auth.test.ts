import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportSPKI, generateKeyPair, SignJWT, UnsecuredJWT, type JWTPayload } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import type { ResolvedConfig } from '../core/config/load.ts';
import { generateSecret } from '../core/config/secrets.ts';
import { gatewayTestEnv } from '../test/harness.ts';
import { startGateway, type RunningGateway } from './start.ts';

/**
 * Tokens as real monoliths issue them (issue 20): Flask-JWT-Extended and Django REST simplejwt
 * carry no `iss`, simplejwt puts a numeric id in `user_id`, Devise-JWT signs with HS256 or an
 * RSA key; a session-cookie monolith sends no token at all. Each shape accepted when configured,
 * and every token that should not pass refused.
 */

const dir = mkdtempSync(join(tmpdir(), 'edge-auth-'));
const running: Array<{ gw: RunningGateway; cleanup: () => Promise<void> }> = [];
afterAll(async () => {
  for (const r of running) {
    await r.gw.stop();
    await r.cleanup();
  }
});

async function gateway(label: string, tweak: (c: ResolvedConfig) => ResolvedConfig) {
  const env = await gatewayTestEnv(label, []);
  const gw = await startGateway(tweak(env.config), { port: 0, instanceId: `gw-${label}` });
  running.push({ gw, cleanup: env.cleanup });
  return { url: gw.url, env };
}

const hs = (secret: string, claims: JWTPayload, alg = 'HS256') => new SignJWT(claims).setProtectedHeader({ alg }).setIssuedAt().setExpirationTime('1h').sign(new TextEncoder().encode(secret));
async function call(url: string, token?: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${url}/api/invoices`, { headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers } });
  const text = await res.text();
  // The refusal's message, as a client reads it.
  const body = res.status === 200 ? text : (JSON.parse(text) as { error: { message: string } }).error.message;
  return { status: res.status, body };
}

describe('tokens at the edge', () => {
  it('accepts a monolith\'s tokens without iss and with a numeric id in another claim (simplejwt) when configured so, and forwards the id', async () => {
    const { url, env } = await gateway('edge_simplejwt', (c) => ({ ...c, legacy: { ...c.legacy, jwtIssuer: null, jwtUserIdClaim: 'user_id', jwtAlgorithms: ['HS256', 'HS512'] } }));
    const secret = env.config.legacy.jwtSecret!;
    const ok = await call(url, await hs(secret, { user_id: 42, token_type: 'access' }, 'HS512'));
    expect(ok.status).toBe(200);
    expect(env.legacy.seen.at(-1)!.headers['x-user-id']).toBe('42');
    // Still refused: no id, a wrong key, alg none, an RSA-signed token for an HMAC issuer.
    expect((await call(url, await hs(secret, { token_type: 'access' }))).body).toMatch(/no user id \(claim user_id\)/);
    expect((await call(url, await hs(generateSecret(), { user_id: 1 }))).status).toBe(401);
    expect((await call(url, new UnsecuredJWT({ user_id: 1 }).setExpirationTime('1h').encode())).body).toMatch(/alg "none" are not accepted/);
    const rsa = await generateKeyPair('RS256');
    // (Only the auth service's JWKS issuer takes RS256 here, and it wants its own iss.)
    expect(await call(url, await new SignJWT({ user_id: 1 }).setProtectedHeader({ alg: 'RS256' }).setExpirationTime('1h').sign(rsa.privateKey))).toEqual({ status: 401, body: "the token's iss claim is not valid (missing)" });
    // An expired token, even within no tolerance of it.
    expect((await call(url, await new SignJWT({ user_id: 1 }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime(Math.floor(Date.now() / 1000) - 60).sign(new TextEncoder().encode(secret)))).body).toMatch(/expired/);
  });

  it('refuses a token without iss when the monolith\'s issuer is configured, naming the claim', async () => {
    const { url, env } = await gateway('edge_iss', (c) => c);
    const r = await call(url, await hs(env.config.legacy.jwtSecret!, { sub: '7' }));
    expect(r.status).toBe(401);
    expect(r.body).toMatch(/the token's iss claim is not valid \(missing\)/);
  });

  it('accepts several issuers at once: a second HMAC secret from a file, an ES256 public key from a PEM file, each with its own audience', async () => {
    const second = generateSecret();
    writeFileSync(join(dir, 'second.secret'), `${second}\n`);
    const es = await generateKeyPair('ES256');
    writeFileSync(join(dir, 'devise.pem'), await exportSPKI(es.publicKey));
    const { url } = await gateway('edge_many', (c) => ({
      ...c,
      gateway: {
        ...c.gateway,
        auth: {
          ...c.gateway.auth,
          issuers: [
            { name: 'billing', issuer: 'billing-app', userIdClaim: 'sub', algorithms: ['HS384'], secretFile: join(dir, 'second.secret') },
            { name: 'devise', issuer: null, audience: 'shop', userIdClaim: 'sub', algorithms: ['ES256'], publicKeyFile: join(dir, 'devise.pem') },
          ],
        },
      },
    }));
    expect((await call(url, await hs(second, { sub: 'b1', iss: 'billing-app' }, 'HS384'))).status).toBe(200);
    expect((await call(url, await hs(second, { sub: 'b1', iss: 'someone-else' }, 'HS384'))).status).toBe(401);
    const devise = (claims: JWTPayload, key = es.privateKey) => new SignJWT(claims).setProtectedHeader({ alg: 'ES256' }).setExpirationTime('1h').sign(key);
    expect((await call(url, await devise({ sub: 'd1', aud: 'shop' }))).status).toBe(200);
    expect((await call(url, await devise({ sub: 'd1', aud: 'elsewhere' }))).body).toMatch(/aud claim/);
    const other = await generateKeyPair('ES256');
    expect((await call(url, await devise({ sub: 'd1', aud: 'shop' }, other.privateKey))).body).toMatch(/signature is not valid/);
  });

  it('in session-cookie mode lets a request with the monolith\'s session through untouched, with no identity, and still verifies a bearer token', async () => {
    const { url, env } = await gateway('edge_cookie', (c) => ({ ...c, gateway: { ...c.gateway, auth: { ...c.gateway.auth, mode: 'session-cookie', sessionCookie: 'sessionid' } } }));
    const r = await call(url, undefined, { cookie: 'theme=dark; sessionid=abc123', 'x-user-id': '1' });
    expect(r.status).toBe(200);
    const seen = env.legacy.seen.at(-1)!;
    expect(seen.headers.cookie).toBe('theme=dark; sessionid=abc123');
    // SECURITY: a client's identity header never reaches the monolith.
    expect(seen.headers['x-user-id']).toBeUndefined();
    expect((await call(url, undefined, { cookie: 'theme=dark' })).body).toMatch(/needs a session \(cookie sessionid\) or a bearer token/);
    expect((await call(url, 'not.a.jwt', { cookie: 'sessionid=abc123' })).status).toBe(401);
  });
});
