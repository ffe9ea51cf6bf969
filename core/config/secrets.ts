import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { StranglerError } from '../errors.ts';
import { BEARER_TOKEN, BEARER_TOKEN_PROBLEM, GENERATE_HINT, secretStrength } from './secret-strength.ts';

/**
 * The secrets of strangler.yaml. None has a default: a secret printed in the repository or its
 * docs is known to everyone, so the processes that need one refuse to start without it.
 * SECURITY: keep them out of version control; set them through the environment or a file flag.
 */
export const SECRETS = {
  legacyJwtSecret: {
    key: 'legacy.jwtSecret',
    env: 'STRANGLER_LEGACY_JWT_SECRET',
    flag: '--legacy-jwt-secret-file',
  },
  adminToken: {
    key: 'gateway.adminToken',
    env: 'STRANGLER_ADMIN_TOKEN',
    flag: '--admin-token-file',
    /** Sent in an Authorization header (RFC 6750 b64token). */
    bearer: true,
  },
} as const satisfies Record<string, { key: string; env: string; flag: string; bearer?: boolean }>;

export type SecretName = keyof typeof SECRETS;

/** The value of each secret in a resolved config (undefined: not set). */
export function secretValue(config: { legacy: { jwtSecret?: string }; gateway: { adminToken?: string } }, name: SecretName): string | undefined {
  return name === 'legacyJwtSecret' ? config.legacy.jwtSecret : config.gateway.adminToken;
}

/** A new secret: 48 random bytes, base64url (safe in YAML, env files and URLs). */
export function generateSecret(): string {
  return randomBytes(48).toString('base64url');
}

/** Why a secret is refused (too short, not random, not a bearer token), or null. `label` names where it came from. */
export function secretProblem(label: string, value: string, name?: SecretName): string | null {
  const { problem } = secretStrength(value);
  if (problem) return `${label}: the secret is ${problem}; generate one with: ${GENERATE_HINT}`;
  if (name && 'bearer' in SECRETS[name] && !BEARER_TOKEN.test(value)) return `${label}: ${BEARER_TOKEN_PROBLEM}`;
  return null;
}

/**
 * The secret a component cannot start without, or CONFIG_INVALID in one line that says how to
 * set it. `who`: what needs it and why ("the gateway verifies the monolith's tokens with it").
 */
export function requireSecret(config: Parameters<typeof secretValue>[0], name: SecretName, who: string): string {
  const value = secretValue(config, name);
  const s = SECRETS[name];
  if (value) {
    // Checked again here: whatever path a value took (a default slipped into the schema, a
    // config built in code), a weak one never reaches a verifier.
    const problem = secretProblem(s.key, value, name);
    if (problem) throw new StranglerError(problem, 'CONFIG_INVALID');
    return value;
  }
  throw new StranglerError(
    `${s.key} is not set and ${who}; set ${s.env}="$(${GENERATE_HINT})" in the environment, pass ${s.flag} <file>, or set ${s.key} in a strangler.yaml kept out of version control`,
    'CONFIG_INVALID',
  );
}

/**
 * Reads a secret from a file (a `--*-file` flag, a Docker or Kubernetes secret), trimming the
 * final newline. SECURITY: secrets go in files or the environment, never in a flag's value,
 * where every user of the machine can read them in the process list.
 */
export function readSecretFile(path: string, flag: string): string {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new StranglerError(`${flag} ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, 'BAD_INPUT');
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new StranglerError(`${flag} ${path}: not text; write the secret as text, e.g.: ${GENERATE_HINT} > ${path}`, 'BAD_INPUT');
  }
  const value = text.replace(/\r?\n$/, '');
  if (!value) throw new StranglerError(`${flag} ${path}: the file is empty; write a secret into it: ${GENERATE_HINT} > ${path}`, 'BAD_INPUT');
  return value;
}
