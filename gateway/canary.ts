import { randomBytes } from 'node:crypto';

export const CANARY_COOKIE = 'strangler_canary';

/** FNV-1a over the text, then murmur3's fmix32 so that similar keys spread evenly. */
function hash32(text: string): number {
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

/**
 * A user's fixed bucket 0..9999 for one service. The salt (the service name) gives each service
 * its own order of users, so the first 5% of one canary are not always the first 5% of the next.
 */
export function canaryBucket(key: string, salt: string): number {
  return hash32(`${salt}:${key}`) % 10_000;
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

const COOKIE_VALUE = /^[A-Za-z0-9_-]{16,64}$/;

/** The strangler_canary cookie's value, or null when absent or not one we could have set. */
export function readCanaryCookie(header: string | undefined): string | null {
  if (!header) return null;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0 || part.slice(0, eq).trim() !== CANARY_COOKIE) continue;
    const value = part.slice(eq + 1).trim();
    return COOKIE_VALUE.test(value) ? value : null;
  }
  return null;
}
