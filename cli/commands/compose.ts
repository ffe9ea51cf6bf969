import { randomBytes } from 'node:crypto';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { generateSecret } from '../../core/config/secrets.ts';
import { StranglerError } from '../../core/errors.ts';
import { output, type GlobalArgs } from '../context.ts';

interface ComposeArgs extends GlobalArgs {
  action: 'secrets';
  out: string;
  force?: boolean;
  dryRun?: boolean;
}

/** The file docker-compose.yml reads its secrets from (env_file). */
export const COMPOSE_SECRETS_FILE = 'secrets.env';

/**
 * The env file of a compose deployment, every secret new and random (pure but for `generate`).
 * One Postgres password for every database server (PGPASSWORD is what the strangler processes
 * log in with), one Redis password, carried in REDIS_URL. Passwords are hex: nothing in them
 * needs quoting in a URL, a command line or an env file.
 */
export function composeSecrets(generate: { secret: () => string; password: () => string } = { secret: generateSecret, password: () => randomBytes(32).toString('hex') }, now = new Date()): { names: string[]; text: string } {
  const postgres = generate.password();
  const redis = generate.password();
  const values: Array<[string, string, string?]> = [
    ['STRANGLER_LEGACY_JWT_SECRET', generate.secret(), "the monolith's HS256 secret (for your own monolith: the secret it signs its tokens with)"],
    ['STRANGLER_ADMIN_TOKEN', generate.secret(), "the bearer token of the gateway's /metrics"],
    ['POSTGRES_PASSWORD', postgres, "the postgres role's password on every database server, set when its volume is created"],
    ['PGPASSWORD', postgres, 'what the strangler processes log in to the databases with'],
    ['REDIS_PASSWORD', redis, "Redis's password"],
    ['REDISCLI_AUTH', redis, "Redis's health check"],
    ['REDIS_URL', `redis://:${redis}@redis:6379`],
  ];
  const text = [
    `# Secrets of docker-compose.yml, written by \`strangler compose secrets\` on ${now.toISOString()}.`,
    '# Never commit this file (.gitignore and .dockerignore list it). Rotating each: docs/security.md.',
    ...values.flatMap(([name, value, why]) => [...(why ? [`# ${why}`] : []), `${name}=${value}`]),
    '',
  ].join('\n');
  return { names: values.map(([name]) => name), text };
}

/** `strangler compose secrets`: the env file of docker-compose.yml, with new random secrets. */
export const composeCommand: CommandModule<GlobalArgs, ComposeArgs> = {
  command: 'compose <action>',
  describe: `secrets: write ${COMPOSE_SECRETS_FILE} for docker-compose.yml, every secret new and random`,
  builder: (y: Argv<GlobalArgs>) =>
    y
      .positional('action', { choices: ['secrets'] as const, demandOption: true })
      .option('out', { type: 'string', default: COMPOSE_SECRETS_FILE, describe: 'where to write it' })
      .option('force', { type: 'boolean', describe: 'overwrite an existing file (read docs/security.md first: the databases keep their old password)' })
      .option('dry-run', { type: 'boolean', describe: 'print what would be written (names only), write nothing' }) as unknown as Argv<ComposeArgs>,
  handler: (args) => {
    const file = resolve(args.out);
    const { names, text } = composeSecrets();
    if (existsSync(file) && !args.force) {
      throw new StranglerError(
        `${file} exists; new secrets would log every user out, and the databases keep the password they were created with (docs/security.md says how to rotate each); pass --force to overwrite it`,
        'CONFLICT',
      );
    }
    if (!args.dryRun) {
      // SECURITY: created anew, readable by its owner only.
      rmSync(file, { force: true });
      writeFileSync(file, text, { mode: 0o600 });
    }
    output(args, { file, dryRun: Boolean(args.dryRun), names }, () =>
      `${args.dryRun ? 'would write' : 'wrote'} ${file} (mode 600): ${names.join(', ')}\nnever commit it; docker compose up reads it (env_file)`,
    );
  },
};
