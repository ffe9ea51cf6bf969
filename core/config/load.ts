import { readFileSync, existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { z } from 'zod';
import { StranglerError } from '../errors.ts';
import type { ResolvedHealthCheck } from '../health-check.ts';
import { configSchema, type ServiceConfig, type StranglerConfig, type TableMapping } from './schema.ts';
import { formatIssues } from './format-issues.ts';
import { SECRETS, secretProblem, type SecretName } from './secrets.ts';

/** Values that override the file: flags first, then environment, resolved at the entry point. */
export interface ConfigOverrides {
  postgresUrl?: string;
  redisUrl?: string;
  redisKeyPrefix?: string;
  legacyJwtSecret?: string;
  adminToken?: string;
  /** Where each overriding secret came from (`STRANGLER_ADMIN_TOKEN`, `--admin-token-file x`), for errors. */
  secretSources?: Partial<Record<SecretName, string>>;
  logLevel?: StranglerConfig['logLevel'];
  /** gateway.zone: one strangler.yaml serves gateways in several zones. */
  gatewayZone?: string;
}

export interface ResolvedTableMapping {
  source: string;
  target: string;
  /** source column → target column, for renamed columns only. */
  columns: Record<string, string>;
  exclude: string[];
  replica: boolean;
  /** Policy for a column added on the source (resolved from sync.schemaChanges when absent). */
  newColumn?: 'ignore' | 'add' | 'stop';
  /** Policy for a TRUNCATE on the source. */
  truncate?: 'apply' | 'stop';
}

export interface ResolvedService extends Omit<ServiceConfig, 'url' | 'database' | 'tables' | 'healthCheck'> {
  url: string;
  /** gateway.healthCheck with the service's overrides. */
  healthCheck: ResolvedHealthCheck;
  database: string;
  databaseUrl: string;
  tables: ResolvedTableMapping[];
}

/** The configuration every component receives. Nothing below the entry points reads process.env. */
export interface ResolvedConfig extends Omit<StranglerConfig, 'legacy' | 'control' | 'services'> {
  file: string | null;
  legacy: Omit<StranglerConfig['legacy'], 'healthCheck'> & { url: string; databaseUrl: string; healthCheck: ResolvedHealthCheck };
  control: StranglerConfig['control'] & { databaseUrl: string };
  services: ResolvedService[];
}

/** Reads, validates and resolves strangler.yaml. Throws CONFIG_INVALID with one line per problem. */
export function loadConfig(file: string | null, overrides: ConfigOverrides = {}): ResolvedConfig {
  let raw: unknown = {};
  if (file) {
    const path = resolve(file);
    if (!existsSync(path)) {
      throw new StranglerError(`config file ${path} not found; create it or pass --config <file>`, 'CONFIG_INVALID');
    }
    try {
      raw = parseYaml(readFileSync(path, 'utf8')) ?? {};
    } catch (err) {
      const where = err instanceof YAMLParseError && err.linePos ? ` at line ${err.linePos[0].line}` : '';
      throw new StranglerError(`${path}: not valid YAML${where}: ${(err as Error).message}`, 'CONFIG_INVALID');
    }
  }
  return resolveConfig(raw, overrides, file ? resolve(file) : null);
}

/** Validates an already-parsed document (used by tests and by loadConfig). */
export function resolveConfig(raw: unknown, overrides: ConfigOverrides = {}, file: string | null = null): ResolvedConfig {
  const parsed = configSchema.safeParse(raw, { reportInput: true });
  const label = file ?? 'strangler.yaml';
  if (!parsed.success) {
    const lines = formatIssues(parsed.error.issues, (path) => knownKeysAt(raw, path));
    throw new StranglerError(`${label} is invalid:\n  ${lines.join('\n  ')}`, 'CONFIG_INVALID', { issues: lines });
  }
  const config = parsed.data;
  const problems = crossCheck(config);
  if (problems.length) {
    throw new StranglerError(`${label} is invalid:\n  ${problems.join('\n  ')}`, 'CONFIG_INVALID', { issues: problems });
  }
  // SECURITY: a secret from the environment or a file flag is held to the same rule as one in the file.
  const weak = (Object.keys(SECRETS) as SecretName[])
    .map((name) => (overrides[name] ? secretProblem(overrides.secretSources?.[name] ?? SECRETS[name].key, overrides[name], name) : null))
    .filter((p): p is string => p !== null);
  if (weak.length) throw new StranglerError(weak.join('\n'), 'CONFIG_INVALID', { issues: weak });
  return applyOverrides(config, overrides, file);
}

function applyOverrides(config: StranglerConfig, o: ConfigOverrides, file: string | null): ResolvedConfig {
  const postgresUrl = (o.postgresUrl ?? config.postgres.url).replace(/\/+$/, '');
  const dbUrl = (db: string) => (db.includes('://') ? db : `${stripDatabase(postgresUrl)}/${db}`);
  return {
    ...config,
    file,
    postgres: { url: postgresUrl },
    redis: { ...config.redis, url: o.redisUrl ?? config.redis.url, keyPrefix: o.redisKeyPrefix ?? config.redis.keyPrefix },
    logLevel: o.logLevel ?? config.logLevel,
    gateway: { ...config.gateway, adminToken: o.adminToken ?? config.gateway.adminToken, zone: o.gatewayZone ?? config.gateway.zone },
    legacy: {
      ...config.legacy,
      jwtSecret: o.legacyJwtSecret ?? config.legacy.jwtSecret,
      url: config.legacy.url ?? `http://127.0.0.1:${config.legacy.port}`,
      healthCheck: { ...config.gateway.healthCheck, ...config.legacy.healthCheck },
      databaseUrl: dbUrl(config.legacy.database),
    },
    control: { ...config.control, databaseUrl: dbUrl(config.control.database) },
    services: [...config.services]
      .sort((a, b) => a.order - b.order)
      .map((s) => ({
        ...s,
        url: s.url ?? `http://127.0.0.1:${s.port}`,
        healthCheck: { ...config.gateway.healthCheck, ...s.healthCheck },
        databaseUrl: dbUrl(s.database),
        tables: s.tables.map((t) => resolveTable(t, config.sync.schemaChanges)),
      })),
  };
}

function resolveTable(t: TableMapping, defaults: StranglerConfig['sync']['schemaChanges']): ResolvedTableMapping {
  return { source: t.source, target: t.target ?? t.source, columns: t.columns, exclude: t.exclude, replica: t.replica || false, newColumn: t.newColumn ?? defaults.newColumn, truncate: t.truncate ?? defaults.truncate };
}

/** postgres://u@h:p/db?x → postgres://u@h:p (keeps the query string off the base). */
function stripDatabase(url: string): string {
  const u = new URL(url);
  u.pathname = '';
  u.search = '';
  return u.toString().replace(/\/+$/, '');
}

/** Rules zod cannot express per field: uniqueness, references, cycles. */
function crossCheck(config: StranglerConfig): string[] {
  const problems: string[] = [];
  const names = new Map<string, number>();
  const prefixes = new Map<string, number>();
  const ports = new Map<number, string>([
    [config.gateway.port, 'gateway.port'],
    [config.legacy.port, 'legacy.port'],
  ]);
  const owners = new Map<string, string>();
  const g = config.gateway;
  if (g.requestTimeoutMs > 0 && g.requestTimeoutMs < g.headersTimeoutMs) problems.push(`gateway.requestTimeoutMs (${g.requestTimeoutMs}) must be 0 (none) or at least gateway.headersTimeoutMs (${g.headersTimeoutMs}): the head is part of the request`);
  config.gateway.auth.issuers.forEach((iss, i) => {
    const at = `gateway.auth.issuers[${i}]`;
    const sources = [iss.jwksUrl && 'jwksUrl', iss.publicKeyFile && 'publicKeyFile', iss.secretFile && 'secretFile'].filter(Boolean);
    if (sources.length !== 1) problems.push(`${at}: give exactly one of jwksUrl, publicKeyFile (PEM) or secretFile (an HMAC secret), not ${sources.length ? sources.join(' and ') : 'none'}`);
    const hmac = iss.algorithms.filter((a) => a.startsWith('HS'));
    // SECURITY: an HMAC algorithm with a public key (or the reverse) is the algorithm-confusion hole.
    if (iss.secretFile && hmac.length !== iss.algorithms.length) problems.push(`${at}.algorithms: a secretFile issuer takes HS256/HS384/HS512 only, not ${iss.algorithms.filter((a) => !a.startsWith('HS')).join(', ')}`);
    if (!iss.secretFile && hmac.length) problems.push(`${at}.algorithms: ${hmac.join(', ')} need a secretFile; a public key (jwksUrl, publicKeyFile) takes RS/PS/ES/EdDSA algorithms`);
  });
  if (config.registry.heartbeatMs >= config.registry.ttlMs) {
    problems.push(`registry.heartbeatMs: ${config.registry.heartbeatMs} must be shorter than registry.ttlMs (${config.registry.ttlMs}), or live instances would lapse between heartbeats`);
  }
  config.services.forEach((s, i) => {
    const at = `services[${i}]`;
    if (s.discovery === 'registry' && s.instances.length) problems.push(`${at}.instances: static instances are not used with discovery: registry; remove them or set discovery: static`);
    if (names.has(s.name)) problems.push(`${at}.name: "${s.name}" is already used by services[${names.get(s.name)}]`);
    names.set(s.name, i);
    if (prefixes.has(s.prefix)) problems.push(`${at}.prefix: "${s.prefix}" is already used by services[${prefixes.get(s.prefix)}]`);
    prefixes.set(s.prefix, i);
    const clash = ports.get(s.port);
    if (clash) problems.push(`${at}.port: ${s.port} is already used by ${clash}; pick a free port`);
    ports.set(s.port, `${at}.port`);
    s.tables.forEach((t, j) => {
      const owner = owners.get(t.source);
      if (t.replica || s.readOnly) return;
      if (owner) problems.push(`${at}.tables[${j}].source: legacy table "${t.source}" is already owned by ${owner}; a table has one writer (mark read copies "replica: true")`);
      owners.set(t.source, `service "${s.name}"`);
    });
  });
  config.services.forEach((s, i) => {
    s.dependsOn.forEach((dep, j) => {
      if (!names.has(dep)) {
        problems.push(`services[${i}].dependsOn[${j}]: unknown service "${dep}"; known services: ${[...names.keys()].join(', ')}`);
      } else if (dep === s.name) {
        problems.push(`services[${i}].dependsOn[${j}]: a service cannot depend on itself`);
      }
    });
  });
  const cycle = findCycle(config.services);
  if (cycle) problems.push(`services: dependsOn has a cycle: ${cycle.join(' -> ')}; remove one of these dependencies`);
  return problems;
}

function findCycle(services: ServiceConfig[]): string[] | null {
  const deps = new Map(services.map((s) => [s.name, s.dependsOn]));
  const state = new Map<string, 'visiting' | 'done'>();
  const stack: string[] = [];
  const visit = (n: string): string[] | null => {
    if (state.get(n) === 'done') return null;
    if (state.get(n) === 'visiting') return [...stack.slice(stack.indexOf(n)), n];
    state.set(n, 'visiting');
    stack.push(n);
    for (const d of deps.get(n) ?? []) {
      if (!deps.has(d)) continue;
      const c = visit(d);
      if (c) return c;
    }
    stack.pop();
    state.set(n, 'done');
    return null;
  };
  for (const s of services) {
    const c = visit(s.name);
    if (c) return c;
  }
  return null;
}

/** The keys the schema allows at a path of the raw document (for "did you mean"). */
function knownKeysAt(raw: unknown, path: PropertyKey[]): string[] {
  let schema: z.ZodType = configSchema;
  for (const key of path) {
    schema = unwrap(schema);
    if (schema instanceof z.ZodObject) schema = schema.shape[key as string] as z.ZodType;
    else if (schema instanceof z.ZodArray) schema = schema.element as z.ZodType;
    else return [];
    if (!schema) return [];
  }
  schema = unwrap(schema);
  void raw;
  return schema instanceof z.ZodObject ? Object.keys(schema.shape) : [];
}

function unwrap(schema: z.ZodType): z.ZodType {
  let s: z.ZodType = schema;
  for (let i = 0; i < 10; i++) {
    if (s instanceof z.ZodDefault || s instanceof z.ZodOptional || s instanceof z.ZodPrefault) s = s.unwrap() as z.ZodType;
    else if (s instanceof z.ZodPipe) s = s.in as z.ZodType;
    else break;
  }
  return s;
}

/** The service that owns a prefix, or a clear error naming the known prefixes. */
export function serviceForPrefix(config: ResolvedConfig, prefix: string): ResolvedService {
  const normalized = prefix.replace(/\/+$/, '').toLowerCase();
  const found = config.services.find((s) => s.prefix === normalized);
  if (!found) {
    throw new StranglerError(
      `unknown prefix "${prefix}"; known prefixes: ${config.services.map((s) => s.prefix).join(', ') || '(none configured)'}`,
      'UNKNOWN_PREFIX',
    );
  }
  return found;
}

/** The service with a name, or a clear error naming the known services. */
export function serviceByName(config: ResolvedConfig, name: string): ResolvedService {
  const found = config.services.find((s) => s.name === name);
  if (!found) {
    throw new StranglerError(
      `unknown service "${name}"; known services: ${config.services.map((s) => s.name).join(', ') || '(none configured)'}`,
      'UNKNOWN_SERVICE',
    );
  }
  return found;
}

/** The JSON Schema of strangler.yaml, for editors (yaml-language-server). */
export function configJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
}
