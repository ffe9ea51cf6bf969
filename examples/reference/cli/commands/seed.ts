import type { Argv, CommandModule } from 'yargs';
import { output, resolveCliConfig, type GlobalArgs } from '../../../../cli/context.ts';
import { migrateLegacy, seedLegacy } from '../../monolith/index.ts';

interface SeedArgs extends GlobalArgs {
  users: number;
  invoices: number;
  seed: number;
}

/**
 * `reference seed`: migrates the reference monolith's database and fills it with users and
 * invoices (`user<N>@example.test` / `password-<N>`). strangler.yaml's dev.setup runs it at
 * `strangler dev up`; run it again to add more.
 */
export const seedCommand: CommandModule<GlobalArgs, SeedArgs> = {
  command: 'seed',
  describe: "migrate the reference monolith's database and fill it with users and invoices",
  builder: (y: Argv<GlobalArgs>) =>
    y
      .option('users', { type: 'number', default: 50, describe: 'users to create' })
      .option('invoices', { type: 'number', default: 500, describe: 'invoices to create' })
      .option('seed', { type: 'number', default: 42, describe: 'PRNG seed (same seed, same data)' }) as unknown as Argv<SeedArgs>,
  handler: async (args) => {
    const config = await resolveCliConfig(args);
    const started = Date.now();
    await migrateLegacy(config.legacy.databaseUrl);
    await seedLegacy(config.legacy.databaseUrl, { users: args.users, invoices: args.invoices, seed: args.seed });
    output(args, { users: args.users, invoices: args.invoices, seed: args.seed, ms: Date.now() - started }, () =>
      `seeded ${args.users} users and ${args.invoices} invoices (seed ${args.seed}) into ${config.legacy.database} in ${Date.now() - started} ms`,
    );
  },
};
