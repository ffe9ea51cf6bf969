import type { z } from 'zod';
import { formatPath } from '../../../../core/config/format-issues.ts';
import { HttpError } from './http-error.ts';

/**
 * Parses a request part with a zod schema; on failure a 400 VALIDATION_FAILED whose message
 * names every bad field (`items[0].quantity: expected a number`), so a client knows what to fix.
 */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown, where = 'body'): z.output<S> {
  const result = schema.safeParse(value ?? {});
  if (result.success) return result.data;
  const lines = result.error.issues.map((issue) => {
    const path = formatPath(issue.path as PropertyKey[]);
    return `${path === '(root)' ? where : path}: ${issue.message}`;
  });
  throw new HttpError(`invalid ${where}: ${lines.join('; ')}`, 'VALIDATION_FAILED', { fields: lines });
}

/** A positive integer id from a route parameter, else 404 (ids that cannot exist are not found). */
export function idParam(value: string | string[] | undefined, what: string): number {
  const text = Array.isArray(value) ? value[0] : value;
  if (!text || !/^[1-9][0-9]{0,9}$/.test(text) || Number(text) > 2147483647) {
    throw new HttpError(`${what} ${JSON.stringify(text ?? '')} not found`, 'NOT_FOUND');
  }
  return Number(text);
}
