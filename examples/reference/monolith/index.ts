export { createLegacyApp, legacySecret, startLegacyApp, type LegacyAppDeps, type RunningLegacy } from './app.ts';
export { openDatabase } from './db.ts';
export { renderTextPng } from './ocr/text-image.ts';
export { createOcrEngine, type OcrEngine } from './ocr/ocr-engine.ts';
export { seedLegacy, seedCredentials, type SeedOptions, type SeedResult } from './seed.ts';
export { LEGACY_TABLES, type AppTables } from './tables.ts';
export { legacyMigrations, migrateLegacy } from './migrate.ts';
