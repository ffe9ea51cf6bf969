/**
 * One base error for the whole toolkit. Every error a user can meet carries a stable
 * `code` (documented, greppable) and a message that says what to do about it.
 */
export class StranglerError extends Error {
  readonly code: ErrorCode;
  readonly details?: Record<string, unknown>;

  constructor(message: string, code: ErrorCode, details?: Record<string, unknown>) {
    super(message);
    this.name = 'StranglerError';
    this.code = code;
    this.details = details;
  }
}

/** Stable error codes, each with the HTTP status it maps to and the CLI exit code. */
export const ERROR_CODES = {
  CONFIG_INVALID: { http: 500, exit: 2 },
  BAD_INPUT: { http: 400, exit: 2 },
  VALIDATION_FAILED: { http: 400, exit: 2 },
  UNAUTHENTICATED: { http: 401, exit: 2 },
  FORBIDDEN: { http: 403, exit: 2 },
  NOT_FOUND: { http: 404, exit: 2 },
  METHOD_NOT_ALLOWED: { http: 405, exit: 2 },
  CONFLICT: { http: 409, exit: 2 },
  PAYLOAD_TOO_LARGE: { http: 413, exit: 2 },
  UNSUPPORTED_MEDIA_TYPE: { http: 415, exit: 2 },
  UNPROCESSABLE: { http: 422, exit: 2 },
  RATE_LIMITED: { http: 429, exit: 1 },
  UNKNOWN_PREFIX: { http: 404, exit: 2 },
  UNKNOWN_SERVICE: { http: 404, exit: 2 },
  CHECK_FAILED: { http: 409, exit: 2 },
  UPSTREAM_UNAVAILABLE: { http: 502, exit: 1 },
  UPSTREAM_TIMEOUT: { http: 504, exit: 1 },
  NOT_READY: { http: 503, exit: 1 },
  STACK_FAILED: { http: 500, exit: 1 },
  INTERNAL: { http: 500, exit: 1 },
} as const satisfies Record<string, { http: number; exit: number }>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** HTTP status for an error code (pure; one table for every app). */
export function httpStatusFor(code: string): number {
  return (ERROR_CODES as Record<string, { http: number }>)[code]?.http ?? 500;
}

/** CLI exit code for an error: 2 for refusals and bad input, 1 for everything else. */
export function exitCodeFor(err: unknown): number {
  if (err instanceof StranglerError) return ERROR_CODES[err.code].exit;
  return 1;
}

/** The JSON body every app answers an error with. */
export function errorBody(code: string, message: string, details?: Record<string, unknown>) {
  return { error: { code, message, ...(details ? { details } : {}) } };
}
