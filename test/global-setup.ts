import type { TestProject } from 'vitest/node';
import { LocalStack } from '../stack/index.ts';

/**
 * One private PostgreSQL (wal_level=logical) and one Redis for the whole run, on free ports.
 * Each test file takes its own databases and Redis key prefix from them (test/harness.ts);
 * fault tests that kill or restart a server start their own.
 */
let stack: LocalStack | undefined;

export async function setup(project: TestProject): Promise<void> {
  stack = await LocalStack.start({ postgres: { ephemeral: true } });
  project.provide('pgBaseUrl', stack.postgres.baseUrl);
  project.provide('redisUrl', stack.redisUrl);
}

export async function teardown(): Promise<void> {
  await stack?.stop();
}

declare module 'vitest' {
  export interface ProvidedContext {
    pgBaseUrl: string;
    redisUrl: string;
  }
}
