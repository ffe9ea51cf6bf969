export { LocalStack, type LocalStackOptions } from './local-stack.ts';
export { PostgresCluster, quoteIdent, type PostgresClusterOptions } from './postgres-cluster.ts';
export { RedisServer } from './redis-server.ts';
export { findPostgresBinaries } from './postgres-binaries.ts';
export { freePort, isListening, waitFor } from './ports.ts';
export { onProcessExit } from './reaper.ts';
