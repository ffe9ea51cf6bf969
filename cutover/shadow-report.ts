import type { Redis } from 'ioredis';
import type { RedisKeys } from '../gateway/redis-keys.ts';

/** One real mismatch the gateways kept (gateway/shadow.ts writes them). */
export interface ShadowSample {
  at: string;
  requestId: string;
  method: string;
  path: string;
  legacy: { status: number; body: string | null };
  service: { status: number; body: string | null } | null;
  diffs: Array<{ path: string; kind: string; legacy?: unknown; service?: unknown }>;
}

export interface ShadowReport {
  /** match, noise, lagged, mismatch, error, skipped: as the gateways counted them. */
  counts: Record<string, string>;
  /** Paths legacy's own two answers to a request differed in, most often first. */
  noisyPaths: Array<{ path: string; times: number }>;
  /** Newest first. */
  samples: ShadowSample[];
}

/** The shadow results of a service: what `strangler diff` prints and the dashboard shows. */
export async function readShadowReport(redis: Redis, keys: RedisKeys, service: string, limit: number): Promise<ShadowReport> {
  const [counts, raw, noise] = await Promise.all([redis.hgetall(keys.shadowCounts(service)), redis.lrange(keys.shadowSamples(service), 0, limit - 1), redis.hgetall(keys.shadowNoise(service))]);
  const noisyPaths = Object.entries(noise)
    .map(([path, times]) => ({ path, times: Number(times) }))
    .sort((a, b) => b.times - a.times || a.path.localeCompare(b.path));
  return { counts, noisyPaths, samples: raw.map((s) => JSON.parse(s) as ShadowSample) };
}
