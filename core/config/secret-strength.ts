/**
 * How strong a secret looks. Pure: no I/O.
 *
 * No test can prove that a string is random; this one refuses what cannot be (too few
 * characters for its alphabet to hold 256 bits, the key size RFC 7518 §3.2 asks of HS256) and
 * what does not look like it (characters spread as unevenly as in words, phrases and repeated
 * patterns). A secret from `openssl rand -base64 32` or longer always passes: over 300,000
 * random 32-byte secrets, the lowest spread measured was 0.86 of a random string's mean, the
 * threshold is 0.8 (about 8 standard deviations below).
 */

/** Bits an HS256 key, and any strangler secret, must be able to hold. */
export const MIN_SECRET_BITS = 256;
/** A secret's characters must be spread at least this evenly, relative to a random string's. */
export const MIN_SPREAD = 0.8;
/** What to run for a good secret (48 bytes: a margin over the 32 needed). */
export const GENERATE_HINT = 'openssl rand -base64 48';

/** A secret sent as a bearer token (RFC 6750 b64token), as `openssl rand -base64 48` prints. */
export const BEARER_TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
export const BEARER_TOKEN_PROBLEM = `the token is sent in an Authorization header: use only letters, digits and -._~+/ (as ${GENERATE_HINT} prints)`;

const ALPHABETS: ReadonlyArray<{ name: string; size: number; pattern: RegExp }> = [
  { name: 'decimal digits', size: 10, pattern: /^[0-9]+$/ },
  { name: 'hex digits', size: 16, pattern: /^([0-9a-f]+|[0-9A-F]+)$/ },
  { name: 'base64 characters', size: 64, pattern: /^[A-Za-z0-9+/_-]+$/ },
  { name: 'printable ASCII characters', size: 95, pattern: /^[\x20-\x7e]+$/ },
];

export interface SecretStrength {
  /** The most entropy its length and alphabet can hold, in bits. */
  capacityBits: number;
  /** Shannon entropy of its characters relative to a random string's of the same length and alphabet (1: as even). */
  spread: number;
  /** Why it is refused, or null. */
  problem: string | null;
}

/** Measures a secret; `problem` says what is wrong with it, in words a user can act on. */
export function secretStrength(secret: string): SecretStrength {
  // Padding carries no entropy.
  const text = secret.replace(/=+$/, '');
  const alphabet = ALPHABETS.find((a) => a.pattern.test(text));
  // Beyond ASCII: judge the UTF-8 bytes (what HS256 is keyed with) over 256 values.
  const symbols: Array<string | number> = alphabet ? [...text] : [...new TextEncoder().encode(text)];
  const size = alphabet?.size ?? 256;
  const unit = alphabet?.name ?? 'bytes';
  const n = Math.min(symbols.length, 4096);
  const capacityBits = Math.floor(symbols.length * Math.log2(size));
  const spread = n < 2 ? 0 : shannon(symbols.slice(0, n)) / expectedShannon(n, size);
  let problem: string | null = null;
  if (capacityBits < MIN_SECRET_BITS) {
    const needed = Math.ceil(MIN_SECRET_BITS / Math.log2(size));
    problem = `too short: ${symbols.length} ${unit} hold at most ${capacityBits} bits of entropy, at least ${MIN_SECRET_BITS} (32 random bytes) are needed, so ${needed} or more`;
  } else if (spread < MIN_SPREAD) {
    problem = `not random enough: its characters repeat like a word, a phrase or a pattern (spread ${spread.toFixed(2)} of a random string's, at least ${MIN_SPREAD} needed)`;
  }
  return { capacityBits, spread, problem };
}

/** Shannon entropy of the symbols' frequencies, bits per symbol. */
function shannon(symbols: ReadonlyArray<string | number>): number {
  const counts = new Map<string | number, number>();
  for (const s of symbols) counts.set(s, (counts.get(s) ?? 0) + 1);
  let h = 0;
  for (const c of counts.values()) {
    const p = c / symbols.length;
    h -= p * Math.log2(p);
  }
  return h;
}

/**
 * The expected Shannon entropy (plug-in estimate) of n symbols drawn uniformly from k: short
 * random strings measure below log2(k), so they are compared with what random strings of their
 * own length measure. E[H] = log2 n − (k/n) Σ_j P(Binomial(n, 1/k) = j) · j log2 j.
 */
export function expectedShannon(n: number, k: number): number {
  const p = 1 / k;
  let pmf = Math.pow(1 - p, n);
  let sum = 0;
  for (let j = 0; j < n; j++) {
    pmf = (pmf * (n - j) * p) / ((j + 1) * (1 - p));
    sum += pmf * (j + 1) * Math.log2(j + 1);
  }
  return Math.log2(n) - (k / n) * sum;
}
