/**
 * The OpenTelemetry implementation of `Tracing`. Imported only by startTracing (tracing.ts), and
 * only when tracing is on: nothing else may import this file.
 */
import { context, defaultTextMapGetter, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Span } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { setGlobalErrorHandler, W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler, TracerProvider } from '@opentelemetry/sdk-trace';
import type { SpanAttributes, TraceSpan, Tracing } from './tracing.ts';

const propagator = new W3CTraceContextPropagator();
const KINDS = { client: SpanKind.CLIENT, internal: SpanKind.INTERNAL } as const;

/** The async-context manager handlers' spans ride on: installed once per process, unless the application installed its own. */
let contextReady = false;
function ensureContextManager(): void {
  if (contextReady) return;
  contextReady = true;
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
}

function clean(attributes: SpanAttributes | undefined): Attributes | undefined {
  if (!attributes) return undefined;
  const out: Attributes = {};
  for (const key in attributes) if (attributes[key] !== undefined) out[key] = attributes[key];
  return out;
}

class OtelSpan implements TraceSpan {
  constructor(readonly span: Span) {}

  get traceparent(): string {
    const c = this.span.spanContext();
    return `00-${c.traceId}-${c.spanId}-0${c.traceFlags & 1}`;
  }

  setAttributes(attributes: SpanAttributes): void {
    if (this.span.isRecording()) this.span.setAttributes(clean(attributes)!);
  }

  rename(name: string): void {
    this.span.updateName(name);
  }

  addEvent(name: string, attributes?: SpanAttributes): void {
    if (this.span.isRecording()) this.span.addEvent(name, clean(attributes));
  }

  #failed = false;

  fail(err: unknown, message?: string): void {
    if (!this.span.isRecording()) return;
    if (err instanceof Error) this.span.recordException(err);
    // The first reason stands (the upstream error, not the 502 it became).
    if (!this.#failed) this.span.setStatus({ code: SpanStatusCode.ERROR, message: message ?? (err instanceof Error ? err.message : String(err)) });
    this.#failed = true;
  }

  end(): void {
    this.span.end();
  }
}

export interface OtelTracingOptions {
  endpoint: string;
  sampleRatio: number;
  serviceName: string;
  /** Told when spans could not be exported (the SDK's error handler is process-wide: the last component started gets them). */
  onError?: (err: unknown) => void;
}

/**
 * One tracer provider per component (a gateway and services may share a test process, each
 * under its own service.name), none registered globally. Spans are batched and exported in the
 * background; a full queue drops spans rather than holding a request.
 */
export function createOtelTracing(o: OtelTracingOptions): Tracing {
  ensureContextManager();
  if (o.onError) setGlobalErrorHandler(o.onError);
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ 'service.name': o.serviceName }),
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(o.sampleRatio) }),
    spanProcessors: [new BatchSpanProcessor({ exporter: new OTLPTraceExporter({ url: o.endpoint, timeoutMillis: 10_000 }), scheduledDelayMillis: 1_000, maxQueueSize: 4_096 })],
  });
  const tracer = provider.getTracer('strangler');

  return {
    serviceName: o.serviceName,
    startServer(name, traceparent, attributes) {
      // A malformed or repeated traceparent starts a new trace (W3C Trace Context §4.3).
      const parent = typeof traceparent === 'string' ? propagator.extract(ROOT_CONTEXT, { traceparent }, defaultTextMapGetter) : ROOT_CONTEXT;
      return new OtelSpan(tracer.startSpan(name, { kind: SpanKind.SERVER, attributes: clean(attributes) }, parent));
    },
    startChild(name, kind, attributes) {
      const active = context.active();
      if (!trace.getSpan(active)) return null;
      return new OtelSpan(tracer.startSpan(name, { kind: KINDS[kind], attributes: clean(attributes) }, active));
    },
    withSpan(span, fn) {
      return context.with(trace.setSpan(context.active(), (span as OtelSpan).span), fn);
    },
    flush: () => provider.forceFlush(),
    shutdown: () => provider.shutdown(),
  };
}
