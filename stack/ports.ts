import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/** Below the demo's 5000-5007 and the usual service ports stays clear. */
const LOWEST = 10_000;
/** A port handed out is not handed out again by this process for this long (its owner may still be starting). */
const HOLD_MS = 120_000;
const handedOut = new Map<number, number>();

/**
 * A TCP port that is free on 127.0.0.1 now, for a server that will listen on it soon.
 *
 * Chosen at random between 10000 and the start of the kernel's ephemeral range, and checked:
 * there, nothing can take it before its server listens except another explicit choice of the
 * same number. A port the OS picks (listen on 0) comes from the ephemeral range, where every
 * outgoing connection also gets its local port: a stack that took a few seconds to start once
 * found one of the suite's connections on its port (EADDRINUSE). The OS picks when the range
 * leaves no room.
 */
export async function freePort(): Promise<number> {
  const high = ephemeralStart();
  if (high - LOWEST >= 1_000) {
    const now = Date.now();
    for (const [port, at] of handedOut) if (now - at > HOLD_MS) handedOut.delete(port);
    for (let attempt = 0; attempt < 50; attempt++) {
      const port = LOWEST + Math.floor(Math.random() * (high - LOWEST));
      if (handedOut.has(port) || !(await bindable(port))) continue;
      handedOut.set(port, now);
      return port;
    }
  }
  return listenOn(0);
}

/** The first port of the kernel's ephemeral range (Linux; 32768, its default, elsewhere). */
function ephemeralStart(): number {
  try {
    const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    return Number.isInteger(low) && low > 0 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

async function bindable(port: number): Promise<boolean> {
  return listenOn(port).then(
    () => true,
    () => false,
  );
}

/** Listens on the port (0: the OS picks), closes, and answers the port. */
function listenOn(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const address = server.address();
      const bound = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(bound));
    });
  });
}

/** Whether something accepts TCP connections on host:port. */
export function isListening(port: number, host = '127.0.0.1', timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    import('node:net').then(({ connect }) => {
      const socket = connect({ port, host });
      const done = (ok: boolean) => {
        socket.destroy();
        resolve(ok);
      };
      socket.setTimeout(timeoutMs, () => done(false));
      socket.once('connect', () => done(true));
      socket.once('error', () => done(false));
    });
  });
}

export async function waitFor(what: string, probe: () => Promise<boolean>, timeoutMs = 30_000, everyMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await probe()) return;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}
