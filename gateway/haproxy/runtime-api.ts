import { createConnection } from 'node:net';

/** HAProxy's Runtime API (the stats socket): one command per connection, its whole answer. */
export function runtimeCommand(socket: string, command: string, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const conn = createConnection(socket);
    let out = '';
    const timer = setTimeout(() => {
      conn.destroy();
      reject(new Error(`HAProxy's Runtime API (${socket}) did not answer "${command.split(' ').slice(0, 3).join(' ')}" within ${timeoutMs} ms`));
    }, timeoutMs);
    conn.setEncoding('utf8');
    conn.on('connect', () => conn.end(`${command}\n`));
    conn.on('data', (chunk: string) => (out += chunk));
    conn.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`HAProxy's Runtime API (${socket}): ${err.message}`));
    });
    conn.on('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
}

/** Map keys and values go to the Runtime API as words: no spaces, line breaks or control characters. */
function word(text: string, what: string): string {
  // SECURITY: ";" would start another Runtime API command, a backslash escape the next character.
  if (!/^[\x21-\x3a\x3c-\x5b\x5d-\x7e]+$/.test(text)) throw new Error(`${what} ${JSON.stringify(text)} cannot be sent to HAProxy's Runtime API (printable characters only, without spaces, ";" or "\\")`);
  return text;
}

/**
 * Replaces a map's whole content atomically: `prepare map` opens a new version, the entries are
 * added to it, `commit map` swaps it in (a request sees the old map or the new one, never half).
 */
export async function replaceMap(socket: string, map: string, entries: Array<[string, string]>): Promise<void> {
  const prepared = await runtimeCommand(socket, `prepare map ${map}`);
  const version = /New version created: (\d+)/.exec(prepared)?.[1];
  if (!version) throw new Error(`HAProxy refused "prepare map ${map}": ${prepared.trim()}`);
  // Several commands per connection (";"-separated), in bounded batches.
  for (let i = 0; i < entries.length; i += 100) {
    const batch = entries.slice(i, i + 100).map(([k, v]) => `add map @${version} ${map} ${word(k, 'the key')} ${v.split(' ').map((x) => word(x, 'the value')).join('\\ ')}`);
    const answer = await runtimeCommand(socket, batch.join(';'));
    if (answer.trim() !== '') throw new Error(`HAProxy refused an "add map" on ${map}: ${answer.trim()}`);
  }
  const committed = await runtimeCommand(socket, `commit map @${version} ${map}`);
  if (committed.trim() !== '') throw new Error(`HAProxy refused "commit map @${version} ${map}": ${committed.trim()}`);
}
