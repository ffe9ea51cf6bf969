import type { RequestHandler } from 'express';
import { errorBody } from '../../../../core/errors.ts';
import { StranglerError } from '../../../../core/errors.ts';
import { bearerToken, type Identity, type TokenVerifier } from './jwt.ts';

declare module 'express-serve-static-core' {
  interface Request {
    user?: Identity & { id: number };
  }
}

/**
 * Requires a valid bearer token and puts the caller on `req.user`. The app checks the token
 * itself: it never trusts identity headers, so it stays safe when reached around the gateway.
 */
export function createRequireUser(verify: TokenVerifier): RequestHandler {
  return async function requireUser(req, res, next) {
    const token = bearerToken(req.headers.authorization);
    const challenge = (message: string) => {
      res.setHeader('www-authenticate', `Bearer error="invalid_token", error_description="${message.replace(/"/g, "'")}"`);
      res.status(401).json(errorBody('UNAUTHENTICATED', message));
    };
    if (!token) {
      res.setHeader('www-authenticate', 'Bearer');
      res.status(401).json(errorBody('UNAUTHENTICATED', 'this endpoint needs a bearer token: Authorization: Bearer <token from /api/auth/login>'));
      return;
    }
    try {
      const identity = await verify(token);
      const id = Number(identity.sub);
      if (!Number.isSafeInteger(id) || id <= 0) return challenge('the token subject is not a user id');
      req.user = { ...identity, id };
      next();
    } catch (err) {
      // The issuer's keys could not be fetched: 503 (retry), not 401 (log in again).
      if (err instanceof StranglerError && err.code !== 'NOT_READY') return challenge(err.message);
      next(err);
    }
  };
}
