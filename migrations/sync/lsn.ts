/** PostgreSQL LSNs ("16/B374D848") as bigints, for comparing and measuring lag in bytes. */
export function lsnToBigInt(lsn: string): bigint {
  const [hi, lo] = lsn.split('/');
  if (hi === undefined || lo === undefined) throw new Error(`not an LSN: ${JSON.stringify(lsn)}`);
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
}

export function bigIntToLsn(value: bigint): string {
  return `${(value >> 32n).toString(16).toUpperCase()}/${(value & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** Compares two LSNs (a few per streamed transaction: numbers, not bigints). */
export function compareLsn(a: string, b: string): number {
  const i = a.indexOf('/');
  const j = b.indexOf('/');
  if (i < 0 || j < 0) throw new Error(`not an LSN: ${JSON.stringify(i < 0 ? a : b)}`);
  const d = parseInt(a.slice(0, i), 16) - parseInt(b.slice(0, j), 16) || parseInt(a.slice(i + 1), 16) - parseInt(b.slice(j + 1), 16);
  return d < 0 ? -1 : d > 0 ? 1 : 0;
}

/** Bytes from `from` to `to` (0 when `to` is not ahead). */
export function lsnDistance(from: string, to: string): number {
  const d = lsnToBigInt(to) - lsnToBigInt(from);
  return d > 0n ? Number(d) : 0;
}

export const ZERO_LSN = '0/0';
