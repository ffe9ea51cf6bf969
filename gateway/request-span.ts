import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TraceSpan, Tracing } from '../core/tracing/tracing.ts';
import type { Choice } from './route-choice.ts';
import type { Route } from './route-types.ts';

/**
 * The gateway's span of one request (only when tracing is on): a child of the client's
 * traceparent when it sent a well-formed one, else the root of a new trace. The query string is
 * left out (it may carry tokens).
 */
function startSpan(tracing: Tracing, req: IncomingMessage, requestId: string): TraceSpan {
  const method = req.method ?? 'GET';
  return tracing.startServer(method, req.headers.traceparent, {
    'http.request.method': method,
    'url.path': (req.url ?? '/').split('?', 1)[0],
    'network.peer.address': req.socket.remoteAddress,
    'strangler.request_id': requestId,
  });
}

/** Ends a span with the status answered (a 5xx marks it failed). */
function endWith(span: TraceSpan, status: number): void {
  span.setAttributes({ 'http.response.status_code': status });
  if (status >= 500) span.fail(`answered ${status}`);
  span.end();
}

/** A plain request's span: it ends when the answer is finished or the connection closes, with the status sent. */
export function startRequestSpan(tracing: Tracing, req: IncomingMessage, res: ServerResponse, requestId: string): TraceSpan {
  const span = startSpan(tracing, req, requestId);
  res.once('close', () => {
    if (res.statusCode < 500 && !res.writableFinished) span.addEvent('client closed the connection');
    endWith(span, res.statusCode);
  });
  return span;
}

/**
 * A WebSocket upgrade's span: the handshake, from the request to the answer (101 once both
 * sides switched, or the refusal). It ends there, not when the connection closes: a socket may
 * stay open for hours, and a span is exported only once it ends.
 */
export function startUpgradeSpan(tracing: Tracing, req: IncomingMessage, requestId: string): { span: TraceSpan; answered(status: number): void } {
  const span = startSpan(tracing, req, requestId);
  span.setAttributes({ 'network.protocol.name': 'websocket' });
  let ended = false;
  return {
    span,
    answered(status) {
      if (ended) return;
      ended = true;
      if (status === 101) span.addEvent('switched protocols');
      endWith(span, status);
    },
  };
}

/** Where the route choice sent the request: the route (prefix, mode, weight), the side and why. */
export function describeChoice(span: TraceSpan, method: string, route: Route | null, choice: Choice): void {
  span.rename(`${method} ${route?.prefix ?? 'unrouted'}`);
  span.setAttributes({
    'http.route': route?.prefix,
    'strangler.route.prefix': route?.prefix ?? 'unrouted',
    'strangler.route.mode': route?.mode,
    'strangler.route.weight': route?.mode === 'canary' ? route.weight : undefined,
    'strangler.service': route?.service,
    'strangler.target': choice.target,
    // Who answered: the target, unless a fallback sends the request to legacy (set again then).
    'strangler.served': choice.target,
    'strangler.choice': choice.why,
    // The canary side this user is on (sticky by token subject or cookie).
    'strangler.canary.side': route?.mode === 'canary' ? (choice.why === 'canary-service' || choice.why === 'no-instance' ? 'service' : 'legacy') : undefined,
    'strangler.fallback_allowed': choice.fallback,
    // Mirrored to the service too; the mirror request's spans are children of this one.
    'strangler.shadow': choice.shadow,
  });
}
