/** What a TypeScript service of your own may use to work with the toolkit. */
export { registerInstance, type InstanceOptions, type InstanceRegistration } from './registration.ts';
export { createRequestId } from './request-id.ts';
export { createTracingMiddleware, startTracing, traceKnex, type Tracing, type TracingConfig } from './tracing.ts';
