import type { RequestHandler } from 'express';
import type { Knex } from 'knex';
import type { TraceSpan, Tracing } from '../core/tracing/tracing.ts';
import { validRequestId } from '../gateway/headers.ts';
import { matchedRoute, recordMatchedRoute } from './matched-route.ts';

export { startTracing, type Tracing, type TracingConfig } from '../core/tracing/tracing.ts';

/**
 * Express middleware: a server span per request, a child of the gateway's (its traceparent), and
 * active while the request's handlers run, so that their database queries (traceKnex) are its
 * children. Mount it first. Named after the matched route pattern once known (not the raw path:
 * ids would make every request its own operation); the query string is left out (tokens).
 */
export function createTracingMiddleware(tracing: Tracing): RequestHandler {
  return function traceRequest(req, res, next) {
    const span = tracing.startServer(req.method, req.headers.traceparent, {
      'http.request.method': req.method,
      'url.path': req.path,
      // SECURITY: only a well-formed id (a caller other than the gateway may send anything).
      'strangler.request_id': validRequestId(req.headers['x-request-id']) ?? undefined,
    });
    recordMatchedRoute(req);
    res.once('close', () => {
      const route = matchedRoute(req);
      span.rename(`${req.method} ${route ?? 'unmatched'}`);
      span.setAttributes({ 'http.route': route, 'http.response.status_code': res.statusCode });
      if (res.statusCode >= 500) span.fail(`answered ${res.statusCode}`);
      span.end();
    });
    tracing.withSpan(span, next);
  };
}

/** The database name of a postgres:// URL, for spans (SECURITY: never the URL, which may hold a password). */
export function databaseName(url: string): string {
  return decodeURIComponent(new URL(url).pathname.slice(1));
}

/** knex's query event payload (the parts read here). */
interface KnexQuery {
  __knexQueryUid: string;
  sql: string;
  method?: string;
}

/**
 * A client span per query of `db`, under the span of the request that ran it (none for queries
 * outside a request: pollers, relays). The SQL is the statement with placeholders, never its values.
 */
export function traceKnex(db: Knex, tracing: Tracing, database?: string): void {
  const open = new Map<string, TraceSpan>();
  db.on('query', (q: KnexQuery) => {
    const operation = /^\s*(\w+)/.exec(q.sql)?.[1]?.toUpperCase() ?? 'QUERY';
    const span = tracing.startChild(database ? `${operation} ${database}` : operation, 'client', {
      'db.system.name': 'postgresql',
      'db.namespace': database,
      'db.operation.name': operation,
      'db.query.text': q.sql,
    });
    if (span) open.set(q.__knexQueryUid, span);
  });
  const done = (q: KnexQuery | undefined, err?: unknown) => {
    const span = q && open.get(q.__knexQueryUid);
    if (!span) return;
    open.delete(q.__knexQueryUid);
    if (err) span.fail(err);
    span.end();
  };
  db.on('query-response', (_response: unknown, q: KnexQuery) => done(q));
  db.on('query-error', (err: unknown, q: KnexQuery) => done(q, err));
}
