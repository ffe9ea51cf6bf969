import type { Argv, CommandModule } from 'yargs';
import { serviceByName } from '../../../../core/config/load.ts';
import { StranglerError } from '../../../../core/errors.ts';
import { output, resolveCliConfig, type GlobalArgs } from '../../../../cli/context.ts';

interface AuthArgs extends GlobalArgs {
  action: 'keys' | 'rotate-keys';
  revoke?: boolean;
  dryRun?: boolean;
}

const when = (d: Date | null) => (d ? d.toISOString().replace(/\.\d+Z$/, 'Z') : '-');

/**
 * `reference auth keys|rotate-keys`: the auth service's RS256 signing keys, kept in its database.
 * Every auth instance reads them there, so a rotation needs no restart.
 */
export const authCommand: CommandModule<GlobalArgs, AuthArgs> = {
  command: 'auth <action>',
  describe: "the auth service's RS256 signing keys: keys (list) | rotate-keys (add the next key, retire the current one)",
  builder: (y: Argv<GlobalArgs>) =>
    y
      .positional('action', { choices: ['keys', 'rotate-keys'] as const, demandOption: true })
      .option('revoke', { type: 'boolean', describe: 'rotate-keys: a key has leaked: the new key signs at once and every other key is deleted (their tokens stop verifying)' })
      .option('dry-run', { type: 'boolean', describe: 'rotate-keys: print the plan, change nothing' })
      .example('$0 auth rotate-keys --dry-run', 'what a rotation would do')
      .example('$0 auth rotate-keys', 'publish a new key now, sign with it once every verifier can have it') as unknown as Argv<AuthArgs>,
  handler: async (args) => {
    const config = await resolveCliConfig(args);
    const service = serviceByName(config, 'auth');
    const { migrateService } = await import('../../migrations/services/index.ts');
    const { openDatabase } = await import('../../monolith/db.ts');
    const { keyPolicy, signingKeys } = await import('../../services/auth/keys.ts');
    const { JWKS_CACHE_MAX_AGE_MS } = await import('../../services/kit/jwt.ts');
    const readOnly = args.action === 'keys' || args.dryRun;
    if (!readOnly) await migrateService(service);
    const db = openDatabase(service.databaseUrl, 2);
    try {
      if (readOnly && !(await db.schema.hasColumn('signing_keys', 'activates_at'))) {
        throw new StranglerError(`the auth database (${service.database}) has no signing keys table yet: start the auth service once (npm run reference -- service auth) or run: npm run reference -- auth rotate-keys`, 'NOT_READY');
      }
      const keys = signingKeys(db, keyPolicy(config.legacy.tokenTtlSeconds));
      if (args.action === 'keys') {
        const list = await keys.list();
        const current = list.length ? (await keys.current()).kid : null;
        const rows = list.map((k) => ({ kid: k.kid, createdAt: k.createdAt, signsFrom: k.activatesAt, retiredAt: k.retiredAt, current: k.kid === current }));
        output(args, rows, () =>
          rows.length
            ? rows.map((r) => `${r.current ? '*' : ' '} ${r.kid}  created ${when(r.createdAt)}  signs from ${when(r.signsFrom)}  retired ${when(r.retiredAt)}`).join('\n')
            : 'no signing key yet: the auth service makes one at its first start',
        );
        return;
      }
      const plan = args.dryRun ? { ...(await keys.plan({ revoke: args.revoke })), kid: '(new)' } : await keys.rotate({ revoke: args.revoke });
      const verb = args.dryRun ? 'would ' : '';
      const lines = [
        `${verb}add key ${plan.kid}: in the JWKS now, signing from ${when(plan.add.activatesAt)}${plan.add.activatesAt > plan.now ? ` (in ${Math.round((plan.add.activatesAt.getTime() - plan.now.getTime()) / 1000)} s, once every verifier can have it)` : ' (at once)'}`,
        ...plan.retire.map((r) => `${verb}retire key ${r.kid}: signs until ${when(r.retiredAt)}, stays in the JWKS until ${when(r.inJwksUntil)} so the tokens it signed verify until they expire`),
        ...plan.remove.map((kid) => `${verb}delete key ${kid}${args.revoke ? ': tokens it signed stop verifying as each verifier refetches the JWKS (at the latest in ${JWKS_CACHE_MAX_AGE_MS / 60_000} min)' : ': every token it signed has expired'}`),
      ];
      output(args, { dryRun: Boolean(args.dryRun), ...plan }, () => lines.join('\n'));
    } finally {
      await db.destroy();
    }
  },
};
