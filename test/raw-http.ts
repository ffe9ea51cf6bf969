import { connect, type Socket } from 'node:net';

/** One HTTP/1.x response as it came over the wire: informational (1xx) heads before it kept apart. */
export interface RawResponse {
  version: string;
  status: number;
  /** [name, value] in wire order, names as sent. */
  headers: Array<[string, string]>;
  body: Buffer;
  trailers: Array<[string, string]>;
  /** 1xx answers received before this one. */
  informational: Array<{ status: number; headers: Array<[string, string]> }>;
}

export interface RawExchange {
  responses: RawResponse[];
  /** The server closed the connection after the last response. */
  closed: boolean;
  /** Bytes received after the last complete response (a HEAD answered with a body would leave some). */
  leftover: Buffer;
}

/** All values of a header (case-insensitive), in order. */
export const headerValues = (r: Pick<RawResponse, 'headers'>, name: string): string[] => r.headers.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v);
export const header = (r: Pick<RawResponse, 'headers'>, name: string): string | undefined => headerValues(r, name)[0];

export interface Endpoint {
  host: string;
  port: number;
}

/**
 * Sends bytes exactly as given on a new TCP connection (no client library to normalise them) and
 * reads back `expect` responses, parsed by the message-length rules of RFC 9112 §6.3: `methods`
 * says which requests were HEAD (no body follows). `send` may be a function writing in steps.
 * Resolves once the responses are read and, with `untilClose`, the server has closed.
 */
export function rawExchange(to: Endpoint, send: string | Buffer | ((socket: Socket) => Promise<void> | void), o: { expect?: number; methods?: string[]; untilClose?: boolean; localAddress?: string; timeoutMs?: number } = {}): Promise<RawExchange> {
  const expect = o.expect ?? 1;
  return new Promise((resolve, reject) => {
    const socket = connect({ host: to.host, port: to.port, localAddress: o.localAddress });
    let buf = Buffer.alloc(0);
    const responses: RawResponse[] = [];
    let pending: RawResponse['informational'] = [];
    let closed = false;
    let settled = false;
    const timer = setTimeout(() => finish(new Error(`no complete answer within ${o.timeoutMs ?? 20_000} ms (got ${responses.length}; ${buf.length} bytes pending)`)), o.timeoutMs ?? 20_000);
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve({ responses, closed, leftover: buf });
    };
    const parse = (atEnd: boolean) => {
      for (;;) {
        if (responses.length >= expect) break;
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
        const m = /^HTTP\/(\d\.\d) (\d{3})/.exec(lines[0]);
        if (!m) return finish(new Error(`not an HTTP status line: ${JSON.stringify(lines[0])}`));
        const headers = lines.slice(1).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()] as [string, string]);
        const status = Number(m[2]);
        let rest = buf.subarray(end + 4);
        if (status >= 100 && status < 200 && status !== 101) {
          pending.push({ status, headers });
          buf = rest;
          continue;
        }
        const r: RawResponse = { version: m[1], status, headers, body: Buffer.alloc(0), trailers: [], informational: pending };
        const isHead = (o.methods?.[responses.length] ?? 'GET') === 'HEAD';
        const length = header(r, 'content-length');
        if (isHead || status === 204 || status === 304) {
          // no body
        } else if (/chunked/i.test(header(r, 'transfer-encoding') ?? '')) {
          const chunks: Buffer[] = [];
          for (;;) {
            const lineEnd = rest.indexOf('\r\n');
            if (lineEnd < 0) return;
            const size = parseInt(rest.subarray(0, lineEnd).toString('latin1'), 16);
            if (size === 0) {
              const trailerEnd = rest.indexOf('\r\n\r\n', lineEnd - 2 < 0 ? 0 : lineEnd - 2);
              if (trailerEnd < 0) return;
              const block = rest.subarray(lineEnd + 2, trailerEnd).toString('latin1');
              r.trailers = block ? block.split('\r\n').map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()] as [string, string]) : [];
              rest = rest.subarray(trailerEnd + 4);
              break;
            }
            if (rest.length < lineEnd + 2 + size + 2) return;
            chunks.push(rest.subarray(lineEnd + 2, lineEnd + 2 + size));
            rest = rest.subarray(lineEnd + 2 + size + 2);
          }
          r.body = Buffer.concat(chunks);
        } else if (length !== undefined) {
          if (rest.length < Number(length)) return;
          r.body = rest.subarray(0, Number(length));
          rest = rest.subarray(Number(length));
        } else {
          // Delimited by the close of the connection (HTTP/1.0 style).
          if (!atEnd) return;
          r.body = rest;
          rest = Buffer.alloc(0);
        }
        responses.push(r);
        pending = [];
        buf = rest;
      }
      if (responses.length >= expect && (!o.untilClose || closed)) finish();
    };
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      parse(false);
    });
    socket.on('end', () => {
      closed = true;
      parse(true);
      finish(responses.length >= expect ? undefined : new Error(`the connection closed after ${responses.length} of ${expect} answers`));
    });
    socket.on('close', () => {
      closed = true;
      parse(true);
      finish(responses.length >= expect ? undefined : new Error(`the connection closed after ${responses.length} of ${expect} answers`));
    });
    socket.on('error', (err) => {
      closed = true;
      parse(true);
      if (responses.length >= expect) finish();
      else finish(err);
    });
    socket.once('connect', async () => {
      try {
        if (typeof send === 'function') await send(socket);
        else socket.write(send);
      } catch (err) {
        finish(err as Error);
      }
    });
  });
}

/** A request head: `GET /x HTTP/1.1`, Host (unless `host: false`) and the given header lines, ending in the blank line. */
export function head(method: string, target: string, headers: Array<[string, string]> = [], o: { version?: '1.0' | '1.1'; host?: string | false } = {}): string {
  const host = o.host === false ? [] : [`Host: ${o.host ?? 'conformance.test'}`];
  const lines = [`${method} ${target} HTTP/${o.version ?? '1.1'}`, ...host, ...headers.map(([n, v]) => `${n}: ${v}`)];
  return `${lines.join('\r\n')}\r\n\r\n`;
}
