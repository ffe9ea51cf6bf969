import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'vitest';
import { BLOCK, sha256, type SeenRequest } from '../test/conformance-upstream.ts';
import { conformanceSuite, row, type RowContext } from '../test/conformance.ts';
import { head, header, headerValues, rawExchange, type Endpoint, type RawExchange } from '../test/raw-http.ts';

/**
 * Issue 25: what reaches the monolith directly must pass through the gateway unchanged. Each row
 * sends the same request to the reference upstream directly and through the data plane and
 * compares what must survive; `throughOnly` rows pin what only a proxy does (refuse, add, strip).
 * Memory, disconnects and slow clients: conformance.scenario.test.ts.
 */

const echoed = (x: RawExchange, i = 0) => JSON.parse(x.responses[i].body.toString('utf8')) as SeenRequest;
const seenSince = (ctx: RowContext, before: number) => ctx.upstream.seen.slice(before);
const one = (to: Endpoint, bytes: string | Buffer, o: Parameters<typeof rawExchange>[2] = {}) => rawExchange(to, bytes, o);
const MB = 1024 * 1024;
const upload = Buffer.from(BLOCK.repeat(24)).subarray(0, 1.5 * MB); // 1.5 MB: curl sends Expect: 100-continue above 1 MB

/** A client that sends `Expect: 100-continue` and its body only once told to (node:http, as .NET's and Java's clients do). */
function expectUpload(to: Endpoint, path: string, body: Buffer, headers: Record<string, string> = {}): Promise<{ continued: boolean; status: number; text: string }> {
  return new Promise((resolve, reject) => {
    let continued = false;
    const req = request({ host: to.host, port: to.port, method: 'POST', path, headers: { expect: '100-continue', 'content-type': 'application/octet-stream', 'content-length': String(body.length), ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ continued, status: res.statusCode ?? 0, text }));
    });
    req.on('continue', () => {
      continued = true;
      req.end(body);
    });
    req.on('error', reject);
  });
}

const curl = await promisify(execFile)('curl', ['--version']).then(
  () => true,
  () => false,
);
const scanFile = join(mkdtempSync(join(tmpdir(), 'conformance-')), 'scan.png');
writeFileSync(scanFile, upload);

/** An Expect request the gateway must refuse: no 100 Continue, the final answer, the body never read, the connection closed. */
const refusedExpect = (name: string, path: string, status: number, extra: Array<[string, string]> = [], length = 1_000_000) =>
  row({
    name,
    throughOnly: true,
    async exchange(to, ctx) {
      const before = ctx.upstream.seen.length;
      const x = await one(to, head('POST', path, [['Content-Type', 'application/octet-stream'], ['Content-Length', String(length)], ['Expect', '100-continue'], ...extra]), { untilClose: true });
      return { x, seen: seenSince(ctx, before) };
    },
    check({ x, seen }) {
      expect(x.responses[0].status).toBe(status);
      expect(x.responses[0].informational).toEqual([]);
      expect(x.closed).toBe(true);
      expect(seen.filter((s) => s.url === path)).toEqual([]);
    },
  });

conformanceSuite(
  'HTTP conformance',
  { trustedProxies: ['127.0.0.2'], rateLimits: [{ prefix: '/', limit: 100_000, windowMs: 60_000 }, { prefix: '/limited', limit: 1, windowMs: 60_000 }] },
  [
    // ── Expect: 100-continue ────────────────────────────────────────────────────────────────
    row({
      name: 'Expect: 100-continue with a 1.5 MB body: 100 Continue, the body streamed upstream, the upstream answer returned (issue 25: a 502 UND_ERR_NOT_SUPPORTED)',
      exchange: (to) => expectUpload(to, '/echo/upload', upload),
      check(through, direct) {
        expect(direct).toMatchObject({ continued: true, status: 200 });
        expect(through).toMatchObject({ continued: true, status: 200 });
        const seen = JSON.parse(through.text) as SeenRequest;
        expect(seen).toMatchObject({ bodyLength: upload.length, sha256: sha256(upload) });
        expect(seen.headers.expect).toBeUndefined();
      },
    }),
    row({
      name: 'curl -F file=@scan.png (1.5 MB, curl sends Expect: 100-continue) gets the upstream answer',
      skip: !curl && 'curl is not installed (the node:http row above covers Expect)',
      async exchange(to) {
        const { stdout } = await promisify(execFile)('curl', ['-sS', '-H', 'Expect: 100-continue', '-F', `file=@${scanFile}`, '-w', '\n%{http_code}', `http://${to.host}:${to.port}/echo/ocr`]);
        const at = stdout.lastIndexOf('\n');
        return { status: Number(stdout.slice(at + 1)), body: stdout.slice(0, at) };
      },
      check(through, direct) {
        expect(through.status).toBe(200);
        expect(through.status).toBe(direct!.status);
        const [t, d] = [JSON.parse(through.body) as SeenRequest, JSON.parse(direct!.body) as SeenRequest];
        expect(t.bodyLength).toBe(d.bodyLength); // the multipart boundary differs, its length does not
        expect(t.headers['content-type']).toMatch(/^multipart\/form-data; boundary=/);
      },
    }),
    row({
      name: 'Expect: 100-continue without a body: answered, nothing hangs',
      exchange: (to) => one(to, head('GET', '/echo/nobody', [['Expect', '100-continue']])),
      check(through, direct) {
        expect(through.responses[0].status).toBe(200);
        expect(direct!.responses[0].status).toBe(200);
        expect(echoed(through).headers.expect).toBeUndefined();
      },
    }),
    refusedExpect('Expect: 100-continue refused by auth: 401 instead of 100, the body never read, the connection closed', '/api/upload', 401),
    refusedExpect('Expect: 100-continue refused by size: 413 on the declared length, before any of the body', '/echo/too-large', 413, [], 11 * MB),
    row({
      name: 'Expect: 100-continue refused by a rate limit: 429 instead of 100',
      throughOnly: true,
      async exchange(to, ctx) {
        const first = await one(to, head('GET', '/limited/a'));
        const before = ctx.upstream.seen.length;
        const x = await one(to, head('POST', '/limited/b', [['Content-Length', '5000'], ['Expect', '100-continue']]), { untilClose: true });
        return { first, x, seen: seenSince(ctx, before) };
      },
      check({ first, x, seen }) {
        expect(first.responses[0].status).toBe(200);
        expect(x.responses[0]).toMatchObject({ status: 429, informational: [] });
        expect(seen).toEqual([]);
      },
    }),
    row({
      name: 'an expectation other than 100-continue: 417',
      exchange: (to) => one(to, head('POST', '/echo', [['Content-Length', '0'], ['Expect', 'something-else']])),
      check: (through, direct) => expect([through.responses[0].status, direct!.responses[0].status]).toEqual([417, 417]),
    }),

    // ── request bodies ─────────────────────────────────────────────────────────────────────
    row({
      name: 'a chunked request body arrives whole',
      exchange: (to) => one(to, `${head('POST', '/echo/chunked', [['Transfer-Encoding', 'chunked']])}6\r\nhello \r\n5\r\nworld\r\n1000\r\n${'x'.repeat(0x1000)}\r\n0\r\n\r\n`),
      check(through, direct) {
        expect(echoed(through)).toMatchObject({ bodyLength: 11 + 0x1000, sha256: echoed(direct!).sha256 });
      },
    }),
    row({
      name: 'request trailers: the body arrives whole; the trailers are dropped (deliberately: RFC 9112 §7.1.2 lets a proxy that de-chunks discard them)',
      exchange: (to) => one(to, `${head('POST', '/echo/trailers', [['Transfer-Encoding', 'chunked'], ['Trailer', 'X-Checksum']])}5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n`),
      check(through, direct) {
        expect(echoed(direct!).trailers).toEqual({ 'x-checksum': 'abc' });
        expect(echoed(through)).toMatchObject({ bodyLength: 5, sha256: echoed(direct!).sha256, trailers: {} });
      },
    }),
    row({
      name: 'HTTP/1.0 POST with Content-Length',
      exchange: (to) => one(to, `${head('POST', '/echo/http10', [['Content-Length', '5']], { version: '1.0', host: false })}hello`, { untilClose: true }),
      check(through, direct) {
        expect(through.closed).toBe(true);
        expect(echoed(through)).toMatchObject({ bodyLength: 5, sha256: echoed(direct!).sha256 });
      },
    }),

    // ── responses ──────────────────────────────────────────────────────────────────────────
    row({
      name: 'HEAD: the head of the GET, Content-Length included, and no body (the next answer on the connection reads cleanly)',
      exchange: (to) => one(to, head('HEAD', '/bytes/5000?length=1') + head('GET', '/echo/after-head'), { expect: 2, methods: ['HEAD', 'GET'] }),
      check(through, direct) {
        expect(header(through.responses[0], 'content-length')).toBe('5000');
        expect(header(through.responses[0], 'content-length')).toBe(header(direct!.responses[0], 'content-length'));
        expect(through.responses[0].body.length).toBe(0);
        expect(echoed(through, 1).url).toBe('/echo/after-head');
      },
    }),
    row({
      name: 'If-None-Match with the current ETag: 304 with the ETag, no body',
      exchange: (to) => one(to, head('GET', '/resource', [['If-None-Match', '"v1-abc"']])),
      check(through, direct) {
        expect(through.responses[0].status).toBe(304);
        expect(direct!.responses[0].status).toBe(304);
        expect(header(through.responses[0], 'etag')).toBe('"v1-abc"');
        expect(header(through.responses[0], 'last-modified')).toBe(header(direct!.responses[0], 'last-modified'));
      },
    }),
    row({
      name: 'If-Modified-Since not older than Last-Modified: 304; a stale ETag: 200',
      exchange: async (to) => [await one(to, head('GET', '/resource', [['If-Modified-Since', 'Thu, 22 Oct 2026 07:28:00 GMT']])), await one(to, head('GET', '/resource', [['If-None-Match', '"v0"']]))],
      check(through, direct) {
        expect(through.map((x) => x.responses[0].status)).toEqual([304, 200]);
        expect(direct!.map((x) => x.responses[0].status)).toEqual([304, 200]);
        expect(through[1].responses[0].body.toString()).toBe('the resource');
      },
    }),
    ...(['gzip', 'br'] as const).map((encoding) =>
      row({
        name: `${encoding} passed through untouched: Content-Encoding, Content-Length and the bytes identical`,
        exchange: (to) => one(to, head('GET', '/compressed', [['Accept-Encoding', encoding === 'br' ? 'br, gzip' : 'gzip']])),
        check(through, direct) {
          const [t, d] = [through.responses[0], direct!.responses[0]];
          expect(header(t, 'content-encoding')).toBe(encoding);
          expect(header(t, 'content-length')).toBe(header(d, 'content-length'));
          expect(header(t, 'vary')).toBe('Accept-Encoding');
          expect(sha256(t.body)).toBe(sha256(d.body));
        },
      }),
    ),
    row({
      name: 'several Set-Cookie headers arrive separately, in order, commas in Expires intact',
      exchange: (to) => one(to, head('GET', '/cookies')),
      check(through, direct) {
        expect(headerValues(through.responses[0], 'set-cookie')).toEqual(headerValues(direct!.responses[0], 'set-cookie'));
        expect(headerValues(through.responses[0], 'set-cookie')).toHaveLength(3);
      },
    }),
    row({
      name: '103 Early Hints passed on (Link); 102 Processing dropped',
      notOn: { haproxy: 'HAProxy 2.6 passes every 1xx on, 102 Processing too (RFC 9110 §15.2 lets a proxy forward them); 103 Early Hints is passed on as here' },
      exchange: async (to) => [await one(to, head('GET', '/early-hints')), await one(to, head('GET', '/processing'))],
      check([hints, processing], direct) {
        expect(hints.responses[0].informational.map((i) => i.status)).toEqual([103]);
        expect(header(hints.responses[0].informational[0], 'link')).toBe(header(direct![0].responses[0].informational[0], 'link'));
        expect(hints.responses[0].body.toString()).toBe('hinted');
        expect(direct![1].responses[0].informational.map((i) => i.status)).toEqual([102]);
        expect(processing.responses[0]).toMatchObject({ status: 200, informational: [] });
      },
    }),
    row({
      name: 'response trailers passed on after the body (never one a trailer must not carry)',
      notOn: { haproxy: 'HAProxy 2.6 passes trailer fields on as the upstream sent them, without removing those a trailer must not carry (clients ignore Set-Cookie there)' },
      exchange: async (to) => [await one(to, head('GET', '/trailers')), await one(to, head('GET', '/trailers', [], { version: '1.0', host: false }), { untilClose: true })],
      check([through, through10], direct) {
        expect(direct![0].responses[0].trailers).toEqual([['X-Checksum', 'sha256=abc'], ['Set-Cookie', 'sneaky=1']]);
        expect(through.responses[0].body.toString()).toBe('with trailers');
        expect(through.responses[0].trailers).toEqual([['X-Checksum', 'sha256=abc']]);
        expect(through10.responses[0].body.toString()).toBe('with trailers'); // HTTP/1.0: no chunks, no trailers
      },
    }),
    row({
      name: 'a 10 kB response header passes intact',
      exchange: (to) => one(to, head('GET', '/long-header')),
      check: (through, direct) => expect(header(through.responses[0], 'x-long')).toBe(header(direct!.responses[0], 'x-long')),
    }),

    // ── request heads ──────────────────────────────────────────────────────────────────────
    row({
      name: 'duplicate request headers reach the upstream as they would directly',
      exchange: (to) => one(to, head('GET', '/echo/dup', [['X-Dup', 'a'], ['X-Dup', 'b'], ['Cookie', 'a=1'], ['Cookie', 'b=2'], ['Accept', 'text/html'], ['Accept', 'application/json']])),
      check(through, direct) {
        for (const name of ['x-dup', 'cookie', 'accept']) expect(echoed(through).headers[name]).toBe(echoed(direct!).headers[name]);
      },
    }),
    row({
      name: 'a 12 kB header within the limit passes intact',
      exchange: (to) => one(to, head('GET', '/echo/long', [['X-Long', 'v'.repeat(12 * 1024)]])),
      check: (through, direct) => expect(echoed(through).headers['x-long']).toBe(echoed(direct!).headers['x-long']),
    }),
    row({
      name: 'a head over the limit (20 kB): 431, and the next request is served',
      notOn: { haproxy: 'HAProxy 2.6 answers a head larger than its buffer with 400, not 431, and closes the connection' },
      exchange: async (to) => [await one(to, head('GET', '/echo/huge', [['X-Huge', 'v'.repeat(20 * 1024)]]), { untilClose: true }), await one(to, head('GET', '/echo/next'))],
      check(through, direct) {
        expect(through[0].responses[0].status).toBe(431);
        expect(direct![0].responses[0].status).toBe(431);
        expect(through[1].responses[0].status).toBe(200);
      },
    }),
    row({
      name: 'Content-Length with Transfer-Encoding (request smuggling): 400, never forwarded',
      notOn: { haproxy: 'HAProxy 2.6 does not refuse the pair: it drops Content-Length and reads the body as chunked (RFC 9112 §6.1), so the request is forwarded chunked and the bytes after its last chunk are parsed as the next request, the same way on both sides (no desync)' },
      exchange: (to) => one(to, `${head('POST', '/echo/smuggle', [['Content-Length', '4'], ['Transfer-Encoding', 'chunked']])}0\r\n\r\nGET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n`, { untilClose: true }),
      check(through, direct, ctx) {
        expect(through.responses[0].status).toBe(400);
        expect(direct!.responses[0].status).toBe(400);
        expect(ctx.upstream.seen.some((s) => s.url.startsWith('/echo/smuggle'))).toBe(false);
      },
    }),
    row({
      name: 'two different Content-Lengths: 400',
      exchange: (to) => one(to, `${head('POST', '/echo/cl', [['Content-Length', '4'], ['Content-Length', '5']])}hello`, { untilClose: true }),
      check: (through, direct) => expect([through.responses[0].status, direct!.responses[0].status]).toEqual([400, 400]),
    }),
    row({
      name: 'percent-encoded paths and query strings reach the upstream with the same meaning',
      exchange: async (to) => {
        const targets = ['/echo/caf%C3%A9/a%20b?q=a%20b&x=%2F&e=%E2%82%AC&plus=a+b&empty=&k', '/echo/%c3%a9/%7Euser/%41?q=%c3%a9'];
        return Promise.all(targets.map(async (t) => echoed(await one(to, head('GET', t))).url));
      },
      check(through, direct) {
        expect(through[0]).toBe(direct![0]);
        // Hex case and encoded unreserved characters are normalised (RFC 3986 §6.2.2: the same URI); the query is untouched.
        expect(through[1]).toBe('/echo/%C3%A9/~user/A?q=%c3%a9');
        expect(decodeURIComponent(through[1])).toBe(decodeURIComponent(direct![1]));
      },
    }),
    row({
      name: 'SECURITY: encoding and path tricks never route around a rule (/api needs a token): refused or held to the rule, never forwarded',
      throughOnly: true,
      async exchange(to, ctx) {
        const before = ctx.upstream.seen.length;
        const targets = ['/public/%2e%2e/api/secret', '/public/../api/secret', '//api/secret', '/API/secret', '/api/./secret', '/%61pi/secret', '/api%2fsecret', '/public%2f..%2fapi/secret', '/public/..;/api/secret', '/api;x=1/secret', '/public/%2e%2e%5capi/secret', 'http://evil.example/api/secret'];
        const statuses: Record<string, number> = {};
        for (const t of targets) statuses[t] = (await one(to, head('GET', t))).responses[0].status;
        return { statuses, seen: seenSince(ctx, before) };
      },
      check({ statuses, seen }) {
        for (const [target, status] of Object.entries(statuses)) expect([target, [400, 401].includes(status)]).toEqual([target, true]);
        expect(seen.map((s) => s.url)).toEqual([]);
      },
    }),

    // ── connections ────────────────────────────────────────────────────────────────────────
    row({
      name: 'HTTP/1.0 client: the whole body, delimited by the connection closing',
      exchange: (to) => one(to, head('GET', '/bytes/200000', [], { version: '1.0', host: false }), { untilClose: true }),
      check(through, direct) {
        expect(through.closed).toBe(true);
        expect(through.responses[0].status).toBe(200);
        expect(sha256(through.responses[0].body)).toBe(sha256(direct!.responses[0].body));
        expect(through.responses[0].body.length).toBe(200_000);
      },
    }),
    row({
      name: 'pipelined requests: answered in order on one connection',
      exchange: (to) => one(to, head('GET', '/echo/p1') + head('POST', '/echo/p2', [['Content-Length', '3']]) + 'abc' + head('HEAD', '/bytes/5000?length=1') + head('GET', '/bytes/70000'), { expect: 4, methods: ['GET', 'POST', 'HEAD', 'GET'] }),
      check(through, direct) {
        expect(through.responses.map((r) => r.status)).toEqual([200, 200, 200, 200]);
        expect([echoed(through, 0).url, echoed(through, 1).url, echoed(through, 1).bodyLength]).toEqual(['/echo/p1', '/echo/p2', 3]);
        expect(header(through.responses[2], 'content-length')).toBe(header(direct!.responses[2], 'content-length'));
        expect(sha256(through.responses[3].body)).toBe(sha256(direct!.responses[3].body));
      },
    }),

    // ── what the gateway adds and removes (services behind it) ─────────────────────────────
    row({
      name: 'hop-by-hop request headers (Connection and those it lists, Keep-Alive, TE, Trailer, Upgrade, Proxy-*) never reach the upstream; end-to-end ones do',
      throughOnly: true,
      exchange: (to) =>
        one(to, head('GET', '/echo/hop', [['Connection', 'keep-alive, X-Private'], ['X-Private', 'secret'], ['Keep-Alive', 'timeout=5'], ['TE', 'trailers'], ['Trailer', 'X-Foo'], ['Upgrade', 'foo/1'], ['Proxy-Authorization', 'Basic eDp5'], ['Proxy-Connection', 'keep-alive'], ['Proxy', 'http://evil.example:8080'], ['X-End-To-End', 'kept']])),
      check(through) {
        const { headers } = echoed(through);
        for (const name of ['x-private', 'keep-alive', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'proxy-connection', 'proxy']) expect([name, headers[name]]).toEqual([name, undefined]);
        expect(headers.connection ?? '').not.toMatch(/x-private/i); // absent is fine (HTTP/1.1 keeps alive by default)
        expect(headers['x-end-to-end']).toBe('kept');
      },
    }),
    row({
      name: 'hop-by-hop response headers never reach the client; end-to-end ones do',
      exchange: (to) => one(to, head('GET', '/hop-by-hop')),
      check(through, direct) {
        const r = through.responses[0];
        expect(header(direct!.responses[0], 'x-upstream-private')).toBeDefined();
        for (const name of ['x-upstream-private', 'proxy-authenticate', 'upgrade']) expect([name, header(r, name)]).toEqual([name, undefined]);
        expect(header(r, 'keep-alive')).not.toBe('timeout=60');
        expect(header(r, 'x-end-to-end')).toBe('kept');
        expect(r.body.toString()).toBe('hop');
      },
    }),
    row({
      name: 'the gateway adds X-Forwarded-For/Proto/Host, X-Request-Id (the client’s when well-formed) and traceparent',
      throughOnly: true,
      exchange: async (to) => [echoed(await one(to, head('GET', '/echo/added', [['X-Request-Id', 'client-id-1']], { host: 'shop.example' }))), echoed(await one(to, head('GET', '/echo/added', [['X-Request-Id', 'not a safe id']])))],
      check([kept, replaced]) {
        expect(kept.headers).toMatchObject({ 'x-forwarded-for': '127.0.0.1', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'shop.example', 'x-request-id': 'client-id-1' });
        expect(kept.headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
        expect(replaced.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
      },
    }),
    row({
      name: 'SECURITY: an untrusted client cannot forge X-Forwarded-*, Forwarded, X-Real-IP or identity headers',
      throughOnly: true,
      async exchange(to, ctx) {
        const forged: Array<[string, string]> = [['X-Forwarded-For', '10.9.9.9'], ['X-Forwarded-Proto', 'https'], ['X-Forwarded-Host', 'evil.example'], ['Forwarded', 'for=10.9.9.9;proto=https'], ['X-Real-IP', '10.9.9.9'], ['X-User-Id', '1'], ['X-User-Email', 'admin@example.test'], ['X-User-Issuer', 'legacy'], ['X-Authenticated-User', '1'], ['X-Forwarded-User', '1']];
        const anonymous = echoed(await one(to, head('GET', '/echo/forged', forged)));
        const asUser7 = echoed(await one(to, head('GET', '/api/forged', [...forged, ['Authorization', `Bearer ${await ctx.plane.token('7')}`]])));
        return { anonymous, asUser7 };
      },
      check({ anonymous, asUser7 }) {
        expect(anonymous.headers).toMatchObject({ 'x-forwarded-for': '127.0.0.1', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'conformance.test' });
        for (const name of ['forwarded', 'x-real-ip', 'x-user-id', 'x-user-email', 'x-user-issuer', 'x-authenticated-user', 'x-forwarded-user']) expect([name, anonymous.headers[name]]).toEqual([name, undefined]);
        expect(asUser7.headers).toMatchObject({ 'x-user-id': '7', 'x-user-issuer': 'legacy', 'x-forwarded-for': '127.0.0.1' });
        expect(asUser7.headers['x-user-email']).toBeUndefined();
        expect(asUser7.headers['x-authenticated-user']).toBeUndefined();
      },
    }),
    row({
      name: 'a trusted proxy (gateway.trustedProxies) has its X-Forwarded-For extended and its Proto and Host kept',
      throughOnly: true,
      exchange: async (to) => echoed(await one(to, head('GET', '/echo/trusted', [['X-Forwarded-For', '203.0.113.7'], ['X-Forwarded-Proto', 'https'], ['X-Forwarded-Host', 'shop.example']]), { localAddress: '127.0.0.2' })),
      check(seen) {
        expect(seen.headers).toMatchObject({ 'x-forwarded-for': '203.0.113.7, 127.0.0.2', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'shop.example' });
      },
    }),
    row({
      name: 'SECURITY: an Upgrade other than websocket (h2c) is not tunnelled: answered as a plain request, the upstream sees no Upgrade',
      throughOnly: true,
      async exchange(to, ctx) {
        const before = ctx.upstream.seen.length;
        const x = await one(to, head('GET', '/echo/h2c', [['Connection', 'Upgrade, HTTP2-Settings'], ['Upgrade', 'h2c'], ['HTTP2-Settings', 'AAMAAABkAARAAAAAAAIAAAAA']]));
        return { x, seen: seenSince(ctx, before) };
      },
      check({ x, seen }) {
        expect(x.responses[0].status).toBe(200);
        expect(seen).toHaveLength(1);
        expect(seen[0].headers.upgrade).toBeUndefined();
        expect(seen[0].headers['http2-settings']).toBeUndefined();
      },
    }),
    row({
      name: 'SECURITY: an Upgrade other than websocket with a body: 400, never forwarded',
      notOn: { haproxy: 'HAProxy 2.6 answers 400 without forwarding but keeps the connection open (it reads and discards the declared body) where the row expects it closed' },
      throughOnly: true,
      async exchange(to, ctx) {
        const before = ctx.upstream.seen.length;
        const x = await one(to, `${head('POST', '/echo/h2c-body', [['Connection', 'Upgrade'], ['Upgrade', 'h2c'], ['Content-Length', '5']])}hello`, { untilClose: true });
        return { x, seen: seenSince(ctx, before) };
      },
      check({ x, seen }) {
        expect(x.responses[0].status).toBe(400);
        expect(x.closed).toBe(true);
        expect(seen).toEqual([]);
      },
    }),
  ],
);
