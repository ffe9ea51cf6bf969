import type { Argv, CommandModule } from 'yargs';
import { output, resolveCliConfig, type GlobalArgs } from '../context.ts';

/** `strangler doctor`: is the legacy database ready for logical replication? Changes nothing. */
export const doctorCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'doctor',
  describe: 'check the legacy database for what logical replication needs (changes nothing; exit 2 when not ready)',
  builder: (y: Argv<GlobalArgs>) => y,
  handler: async (args) => {
    const config = await resolveCliConfig(args);
    const { runDoctor } = await import('../../migrations/sync/doctor.ts');
    const findings = await runDoctor(config);
    const ready = findings.every((f) => f.ok);
    output(args, { ready, findings }, () => {
      const lines = findings.map((f) => `${f.ok ? 'ok  ' : 'FAIL'}  ${f.check}: ${f.detail}${f.ok || !f.fix ? '' : `\n        fix: ${f.fix}`}`);
      return `${lines.join('\n')}\n\n${ready ? 'the legacy database is ready for strangler sync start' : 'not ready: apply the fixes above, then run strangler doctor again'}`;
    });
    if (!ready) process.exitCode = 2;
  },
};
