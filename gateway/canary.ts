import { randomBytes } from 'node:crypto';

export const CANARY_COOKIE = 'strangler_canary';
/** The canary cookie's attributes: both engines set it alike. */
export const CANARY_COOKIE_ATTRIBUTES = 'Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax';
/** A canary cookie value this toolkit could have set (any other is ignored, and replaced). */
export const CANARY_COOKIE_VALUE = /^[A-Za-z0-9_-]{16,64}$/;

/**
 * The hashes a canary buckets users by. `xxh32` (xxHash32, seed 0, over the UTF-8 bytes) is what
 * every canary begun since the HAProxy engine's native canary uses: HAProxy computes it with its
 * own `xxh32` converter, so a canary request runs no Lua there. `fnv1a` (FNV-1a over the UTF-16
 * code units, then murmur3's fmix32) is what canaries begun before used; a route keeps the hash it
 * began with (route-types.ts `canaryHash`), so upgrading the toolkit moves no user of a running canary.
 */
export type CanaryHash = 'xxh32' | 'fnv1a';
/** The hash a canary begins with (and that of a route built in code, which names none). */
export const DEFAULT_CANARY_HASH: CanaryHash = 'xxh32';

function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const P1 = 0x9e3779b1;
const P2 = 0x85ebca77;
const P3 = 0xc2b2ae3d;
const P4 = 0x27d4eb2f;
const P5 = 0x165667b1;
const rotl = (x: number, r: number) => (x << r) | (x >>> (32 - r));
const round = (acc: number, word: number) => Math.imul(rotl((acc + Math.imul(word, P2)) | 0, 13), P1);

/** xxHash32 with seed 0: the reference algorithm, as HAProxy's `xxh32` converter computes it. */
export function xxh32(bytes: Uint8Array): number {
  const n = bytes.length;
  const word = (i: number) => bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24);
  let i = 0;
  let h: number;
  if (n >= 16) {
    let v1 = (P1 + P2) | 0;
    let v2 = P2;
    let v3 = 0;
    let v4 = -P1 | 0;
    for (; i <= n - 16; i += 16) {
      v1 = round(v1, word(i));
      v2 = round(v2, word(i + 4));
      v3 = round(v3, word(i + 8));
      v4 = round(v4, word(i + 12));
    }
    h = (rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18)) | 0;
  } else {
    h = P5;
  }
  h = (h + n) | 0;
  for (; i <= n - 4; i += 4) h = Math.imul(rotl((h + Math.imul(word(i), P3)) | 0, 17), P4);
  for (; i < n; i++) h = Math.imul(rotl((h + Math.imul(bytes[i], P5)) | 0, 11), P1);
  h ^= h >>> 15;
  h = Math.imul(h, P2);
  h ^= h >>> 13;
  h = Math.imul(h, P3);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * A user's fixed bucket 0..9999 for one service. The salt (the service name) gives each service
 * its own order of users, so the first 5% of one canary are not always the first 5% of the next.
 */
export function canaryBucket(key: string, salt: string, hash: CanaryHash = DEFAULT_CANARY_HASH): number {
  const text = `${salt}:${key}`;
  return (hash === 'fnv1a' ? fnv1a(text) : xxh32(Buffer.from(text, 'utf8'))) % 10_000;
}

/**
 * On the service side when the bucket is under weight×100. The bucket never changes for a
 * user, so raising the weight only ever moves users from legacy to the service, never back.
 */
export function onServiceSide(bucket: number, weight: number): boolean {
  return bucket < Math.round(weight * 100);
}

export function newCanaryCookieValue(): string {
  return randomBytes(16).toString('base64url');
}

/** The strangler_canary cookie's value, or null when absent or not one we could have set. */
export function readCanaryCookie(header: string | undefined): string | null {
  if (!header) return null;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0 || part.slice(0, eq).trim() !== CANARY_COOKIE) continue;
    const value = part.slice(eq + 1).trim();
    return CANARY_COOKIE_VALUE.test(value) ? value : null;
  }
  return null;
}
