import type { StranglerConfig } from '../config/schema.ts';
import type { Logger } from '../logger.ts';

/** strangler.yaml's `tracing` section. */
export type TracingConfig = StranglerConfig['tracing'];

/** Span attribute values (undefined ones are left out). */
export type SpanAttributes = Record<string, string | number | boolean | undefined>;

/** One span, whether recorded or not (an unsampled one still carries the trace onwards). */
export interface TraceSpan {
  /** The W3C traceparent that makes this span the parent of what it calls. */
  readonly traceparent: string;
  setAttributes(attributes: SpanAttributes): void;
  /** Its name, once what it is became known (a request's route). */
  rename(name: string): void;
  addEvent(name: string, attributes?: SpanAttributes): void;
  /** Marks the span failed, with the error as an exception event. */
  fail(err: unknown, message?: string): void;
  end(): void;
}

/**
 * The narrow tracing interface the gateway and the SDK use; the OpenTelemetry SDK behind it is
 * loaded only by `startTracing`, and only when tracing is on.
 */
export interface Tracing {
  readonly serviceName: string;
  /** A server span for a request: a child of the caller's traceparent when well-formed, else the root of a new trace. */
  startServer(name: string, traceparent: string | string[] | undefined, attributes?: SpanAttributes): TraceSpan;
  /** A span under the one active in this async context (a request handler's); null when none is (background work). */
  startChild(name: string, kind: 'client' | 'internal', attributes?: SpanAttributes): TraceSpan | null;
  /** Runs `fn` with `span` active: what it awaits and calls inherits it (startChild finds it). */
  withSpan<T>(span: TraceSpan, fn: () => T): T;
  /** Exports what is buffered. */
  flush(): Promise<void>;
  /** Exports what is buffered, then stops. */
  shutdown(): Promise<void>;
}

/**
 * The tracing of one process component (`serviceName` in the spans' resource), or undefined when
 * `tracing.endpoint` is not set. The OpenTelemetry packages are imported here, lazily: a process
 * that does not trace never loads them (CLI start-up time), and its request path has no tracing
 * code at all beyond an `undefined` check.
 */
export async function startTracing(config: TracingConfig, serviceName: string = config.serviceName, logger?: Logger): Promise<Tracing | undefined> {
  if (!config.endpoint) return undefined;
  const { createOtelTracing } = await import('./otel.ts');
  // SECURITY: the endpoint is logged without any user:password it may carry.
  const where = (({ origin, pathname }) => `${origin}${pathname}`)(new URL(config.endpoint));
  logger?.info({ endpoint: where, sampleRatio: config.sampleRatio, serviceName }, 'tracing: exporting spans over OTLP/HTTP');
  // A collector that is down fails every export (each second): said once a minute, not each time.
  let lastWarned = 0;
  const onError = logger
    ? (err: unknown) => {
        if (Date.now() - lastWarned < 60_000) return;
        lastWarned = Date.now();
        logger.warn({ err, endpoint: where }, 'tracing: spans could not be exported (they are dropped; requests are not affected)');
      }
    : undefined;
  return createOtelTracing({ endpoint: config.endpoint, sampleRatio: config.sampleRatio, serviceName, onError });
}
