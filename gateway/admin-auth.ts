import { createHash, timingSafeEqual } from 'node:crypto';

/** The paths that need `Authorization: Bearer <gateway.adminToken>`. */
export const ADMIN_PATHS: ReadonlySet<string> = new Set(['/metrics']);

/**
 * The check of the gateway's admin endpoints. /metrics names every route, service and instance
 * address and their error rates: enough to map the network behind the gateway, so it is not
 * for anonymous clients. /healthz and /readyz stay open for load balancers and say nothing of it.
 * SECURITY: the presented token and the configured one are compared as SHA-256 digests with
 * timingSafeEqual: the time taken depends on neither the content nor the length of either.
 */
export function createAdminAuth(adminToken: string) {
  const expected = digest(adminToken);
  return function isAdmin(authorization: string | undefined): boolean {
    const match = authorization ? /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization) : null;
    return match !== null && timingSafeEqual(digest(match[1]), expected);
  };
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}
