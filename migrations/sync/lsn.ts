/** PostgreSQL LSNs ("16/B374D848") as bigints, for comparing and measuring lag in bytes. */
export function lsnToBigInt(lsn: string): bigint {
  const [hi, lo] = lsn.split('/');
  if (hi === undefined || lo === undefined) throw new Error(`not an LSN: ${JSON.stringify(lsn)}`);
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
}

export function bigIntToLsn(value: bigint): string {
  return lsnText(Number(value >> 32n), Number(value & 0xffffffffn));
}

const HEX = '0123456789ABCDEF';
/** The last high half printed, with its slash: it changes once every 4 GB of WAL. */
let lastHi = 0;
let lastHiText = '0/';

/**
 * An LSN from its two 32-bit halves, as PostgreSQL prints it (`0/32CDCC60`: no zero padding,
 * upper case). The decoder prints three per source transaction: no intermediate strings.
 */
export function lsnText(hi: number, lo: number): string {
  if (hi !== lastHi) {
    lastHi = hi;
    lastHiText = `${hi.toString(16).toUpperCase()}/`;
  }
  let low = '';
  do {
    low = HEX[lo & 15] + low;
    lo >>>= 4;
  } while (lo !== 0);
  return lastHiText + low;
}

/** The hexadecimal number in s[from, to) (NaN if a character is not a hex digit or it is empty, as parseInt would say). */
function hexAt(s: string, from: number, to: number): number {
  if (from >= to) return NaN;
  let v = 0;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    const d = c >= 48 && c <= 57 ? c - 48 : c >= 65 && c <= 70 ? c - 55 : c >= 97 && c <= 102 ? c - 87 : -1;
    if (d < 0) return NaN;
    v = v * 16 + d;
  }
  return v;
}

/** Compares two LSNs (a few per streamed transaction: numbers, not bigints, and no substrings). */
export function compareLsn(a: string, b: string): number {
  const i = a.indexOf('/');
  const j = b.indexOf('/');
  if (i < 0 || j < 0) throw new Error(`not an LSN: ${JSON.stringify(i < 0 ? a : b)}`);
  if (a === b) return 0;
  const d = hexAt(a, 0, i) - hexAt(b, 0, j) || hexAt(a, i + 1, a.length) - hexAt(b, j + 1, b.length);
  return d < 0 ? -1 : d > 0 ? 1 : 0;
}

/** Bytes from `from` to `to` (0 when `to` is not ahead). */
export function lsnDistance(from: string, to: string): number {
  const d = lsnToBigInt(to) - lsnToBigInt(from);
  return d > 0n ? Number(d) : 0;
}

export const ZERO_LSN = '0/0';
