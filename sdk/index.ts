/** What a TypeScript service of your own may use to work with the toolkit. */
export { registerInstance, type InstanceOptions, type InstanceRegistration } from './registration.ts';
export { createRequestId } from './request-id.ts';
