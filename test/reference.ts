/**
 * The reference example (examples/reference/) as a fixture of the toolkit's tests and benches:
 * a monolith's schema and seed data, its services' schemas, tokens it signs. The toolkit's own
 * code never imports the example (test/import-graph.test.ts); its tests reach it only here.
 */
export { migrateLegacy } from '../examples/reference/monolith/migrate.ts';
export { seedLegacy } from '../examples/reference/monolith/seed.ts';
export { migrateService } from '../examples/reference/migrations/services/index.ts';
export { signLegacyToken } from '../examples/reference/services/kit/jwt.ts';
export { startLegacyApp } from '../examples/reference/monolith/app.ts';
export { startService } from '../examples/reference/services/app.ts';
