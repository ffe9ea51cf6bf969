export * from './schema.ts';
export * from './load.ts';
export { formatPath } from './format-issues.ts';
