import type { ErrorRequestHandler, RequestHandler } from 'express';
import { errorBody, httpStatusFor, StranglerError } from '../../../../core/errors.ts';

/** Throw from a handler: becomes `{ error: { code, message } }` with the code's status. */
export class HttpError extends StranglerError {}

/** 404 for routes no handler took, in the same JSON shape as every other error. */
export function createNotFoundHandler(): RequestHandler {
  return function notFound(req, res) {
    res.status(404).json(errorBody('NOT_FOUND', `no route for ${req.method} ${req.path}`));
  };
}

/**
 * The one error handler of an app: StranglerErrors keep their code; body-parser errors become
 * 400/413 with a message that says what was wrong; anything else is a logged 500 that leaks
 * nothing.
 */
export function createErrorHandler(): ErrorRequestHandler {
  return function handleError(err, req, res, _next) {
    if (res.headersSent) return res.destroy();
    if (err instanceof StranglerError) {
      res.status(httpStatusFor(err.code)).json(errorBody(err.code, err.message, err.details));
      return;
    }
    const e = err as { type?: string; status?: number; message?: string };
    if (e.type === 'entity.parse.failed') {
      res.status(400).json(errorBody('BAD_INPUT', 'the request body is not valid JSON; send Content-Type: application/json with a JSON object'));
      return;
    }
    if (e.type === 'entity.too.large') {
      res.status(413).json(errorBody('PAYLOAD_TOO_LARGE', 'the request body is too large'));
      return;
    }
    req.log?.error({ err }, 'unhandled error');
    res.status(500).json(errorBody('INTERNAL', 'internal error; see the service log with this request id'));
  };
}
