import { randomUUID } from 'node:crypto';
import type { RequestHandler } from 'express';
import type { Logger } from '../core/logger.ts';

declare module 'express-serve-static-core' {
  interface Request {
    id: string;
    log: Logger;
  }
}

const VALID_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Takes the gateway's X-Request-Id (or makes one), echoes it, and gives the request a child logger. */
export function createRequestId(logger: Logger): RequestHandler {
  return function requestId(req, res, next) {
    const incoming = req.headers['x-request-id'];
    const id = typeof incoming === 'string' && VALID_ID.test(incoming) ? incoming : randomUUID();
    req.id = id;
    req.log = logger.child({ reqId: id });
    res.setHeader('x-request-id', id);
    next();
  };
}
