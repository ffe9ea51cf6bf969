import type { Argv, CommandModule } from 'yargs';
import type { ResolvedConfig } from '../../core/config/load.ts';
import { StranglerError } from '../../core/errors.ts';
import type { ChangeOutcome } from '../../cutover/executor.ts';
import { describeOutcome, outcomeExitCode } from '../../cutover/outcome-text.ts';
import type { AckWait } from '../../cutover/route-change.ts';
import { commandProblem, DEFAULT_STEPS, type Command, type MethodScope } from '../../cutover/state-machine.ts';
import { output, resolveCliConfig, type GlobalArgs } from '../context.ts';
import { createProgress, type Progress, type ProgressStream } from '../progress.ts';

interface ChangeArgs extends GlobalArgs {
  prefix: string;
  shadow?: boolean;
  canary?: number;
  full?: boolean;
  progressive?: boolean;
  methods?: string;
  steps?: string;
  interval?: string;
  maxErrorRate?: number;
  maxP99Ms?: number;
  threshold?: number;
  resume?: boolean;
  bake?: string;
  bakeInterval?: string;
  sync?: boolean;
  dryRun?: boolean;
  reason?: string;
  force?: boolean;
  actor?: string;
  ackTimeout?: string;
}

/** "30s", "2m", "500ms", "1h" → ms. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text.trim());
  if (!m) throw new StranglerError(`"${text}" is not a duration; write e.g. 30s, 2m, 500ms`, 'BAD_INPUT');
  return Number(m[1]) * { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
}

const changeOptions = (y: Argv<GlobalArgs>) =>
  y
    .positional('prefix', { type: 'string', demandOption: true, describe: 'a route prefix of strangler.yaml, e.g. /api/invoices' })
    .option('dry-run', { type: 'boolean', describe: 'print the plan and the checks; change nothing' })
    .option('reason', { type: 'string', describe: 'why (recorded in the audit log; required by rollback and --force)' })
    .option('force', { type: 'boolean', describe: 'go despite failed checks (recorded as forced)' })
    .option('actor', { type: 'string', describe: 'who (default: STRANGLER_ACTOR, else the OS user)' })
    .option('ack-timeout', { type: 'string', default: '5s', describe: 'how long to wait for every live gateway to acknowledge' });

/**
 * `--methods GET,head` → ['GET', 'HEAD'] (uppercase, each once); absent → null (all methods), or
 * undefined (keep the canary's scope) for a --resume. Unknown methods are refused by commandProblem.
 */
export function methodsOf(args: Pick<ChangeArgs, 'methods' | 'resume'>): MethodScope | undefined {
  if (args.methods === undefined) return args.resume ? undefined : null;
  const methods = [...new Set(String(args.methods).split(',').map((m) => m.trim().toUpperCase()).filter(Boolean))];
  if (methods.length === 0) throw new StranglerError('--methods is empty; name the methods to move, e.g. --methods GET,HEAD', 'BAD_INPUT');
  return methods;
}

/**
 * Every flag of a change checked before any I/O, so that bad input is exit 2 with no stack
 * running at all. Returns the command (null for progressive and rollback).
 */
export async function validateChange(args: ChangeArgs, config: ResolvedConfig, kind: 'cutover' | 'promote' | 'rollback' | 'finalize'): Promise<Command | null> {
  const { serviceForPrefix } = await import('../../core/config/load.ts');
  serviceForPrefix(config, args.prefix);
  parseDuration(args.ackTimeout ?? '5s');
  if (kind === 'rollback' && !args.reason?.trim()) throw new StranglerError('rollback needs --reason "...": it is recorded in the audit log', 'BAD_INPUT');
  if (args.force && !args.reason?.trim()) throw new StranglerError('--force needs --reason "...": a forced change is recorded with why', 'BAD_INPUT');
  if (kind !== 'cutover') return null;
  if (args.bake !== undefined && !args.full && !args.progressive && !args.resume) throw new StranglerError('--bake follows a switch: use it with --full or --progressive', 'BAD_INPUT');
  if (args.full || args.progressive || args.resume) bakeOf(args, config);
  const modes = [args.sync, args.shadow, args.canary !== undefined, args.full, args.progressive || args.resume].filter(Boolean).length;
  if (modes !== 1) throw new StranglerError('say what to do with exactly one of --sync, --shadow, --canary N, --full, --progressive (or --resume)', 'BAD_INPUT');
  if (args.methods !== undefined && (args.sync || args.shadow)) throw new StranglerError('--methods scopes a step that moves traffic: use it with --canary N, --full or --progressive', 'BAD_INPUT');
  const methods = methodsOf(args);
  const scopeProblem = commandProblem({ kind: 'full', methods });
  if (scopeProblem) throw new StranglerError(scopeProblem, 'BAD_INPUT');
  if (args.bake !== undefined && args.full && methods) throw new StranglerError('--full --methods moves only those methods (a canary of every user), no switch to bake; bake the switch that moves the rest: --full without --methods', 'BAD_INPUT');
  if (args.progressive || args.resume) {
    const { validateSteps } = await import('../../cutover/progressive.ts');
    const bad = validateSteps(stepsOf(args));
    if (bad) throw new StranglerError(bad, 'BAD_INPUT');
    parseDuration(args.interval ?? '30s');
    if (!Number.isInteger(args.threshold ?? 2) || (args.threshold ?? 2) < 1) throw new StranglerError(`--threshold must be a whole number ≥ 1, got ${args.threshold}`, 'BAD_INPUT');
    return null;
  }
  const command: Command = args.sync ? { kind: 'sync' } : args.shadow ? { kind: 'shadow' } : args.full ? { kind: 'full', methods } : { kind: 'canary', weight: args.canary!, methods };
  const problem = commandProblem(command);
  if (problem) throw new StranglerError(problem, 'BAD_INPUT');
  return command;
}

const stepsOf = (args: ChangeArgs) => (args.steps ?? DEFAULT_STEPS.join(',')).split(',').map((s) => Number(s.trim()));

async function withCutover<T>(args: ChangeArgs, kind: Parameters<typeof validateChange>[2], fn: (c: Awaited<ReturnType<typeof import('../../cutover/executor.ts').openCutover>>, command: Command | null) => Promise<T>): Promise<T> {
  const config = await resolveCliConfig(args);
  const command = await validateChange(args, config, kind);
  const { openCutover, resolveActor } = await import('../../cutover/executor.ts');
  const opened = await openCutover(config, resolveActor(args.actor), { ackTimeoutMs: parseDuration(args.ackTimeout ?? '5s'), onAckWait: ackProgress() });
  try {
    return await fn(opened, command);
  } finally {
    await opened.close();
  }
}

/**
 * The waits for the gateways' acknowledgements, as progress on stderr: on a terminal a line
 * redrawn in place and wiped once the wait ends (the outcome says how it went); otherwise a plain
 * line every 5 s, so a wait on a gateway that does not answer shows in a log.
 */
export function ackProgress(stream?: ProgressStream): (w: AckWait) => void {
  let current: { version: number; progress: Progress } | null = null;
  return (w) => {
    if (current?.version !== w.version) current = { version: w.version, progress: createProgress({ label: `route v${w.version}: acknowledged by`, unit: 'gateways', stream }) };
    current.progress.update({ done: w.acknowledged, total: w.live, detail: `waited ${(w.ms / 1000).toFixed(1)} s` });
    if (w.done) current.progress.finish(false);
  };
}

function finish(args: ChangeArgs, o: ChangeOutcome): void {
  output(args, o, () => describeOutcome(o));
  const code = outcomeExitCode(o);
  if (code) process.exitCode = code;
}

/** The bake after a switch: --bake, else cutover.bakeSeconds of strangler.yaml (0: none), in ms. */
function bakeOf(args: ChangeArgs, config: ResolvedConfig): { durationMs: number; intervalMs: number } {
  const durationMs = args.bake !== undefined ? (args.bake.trim() === '0' ? 0 : parseDuration(args.bake)) : config.cutover.bakeSeconds * 1000;
  const intervalMs = args.bakeInterval !== undefined ? parseDuration(args.bakeInterval) : config.cutover.bakeIntervalSeconds * 1000;
  return { durationMs, intervalMs: Math.min(intervalMs, durationMs || intervalMs) };
}

/** Runs the bake of a prefix just switched, printing its analyses; a failed one ends in an automatic rollback (exit 2). */
async function bakeAfterSwitch(args: ChangeArgs, cutover: Parameters<typeof import('../../cutover/bake.ts').runBake>[0], bake: { durationMs: number; intervalMs: number }): Promise<void> {
  const { runBake } = await import('../../cutover/bake.ts');
  if (!args.json) process.stderr.write(`\n  baking ${args.prefix} for ${Math.round(bake.durationMs / 1000)} s: analysed every ${Math.round(bake.intervalMs / 1000)} s; rollback after ${args.threshold ?? 2} failed analyses in a row\n`);
  await runBake(cutover, args.prefix, { ...bake, threshold: args.threshold ?? 2, maxErrorRate: args.maxErrorRate, maxP99Ms: args.maxP99Ms }, (e) => {
    if (args.json) return;
    if (e.kind === 'baking') process.stderr.isTTY && process.stderr.write(`\r  baking: ${Math.ceil(e.remainingMs / 1000)} s left   `);
    else if (e.kind === 'analysis') process.stderr.write(`\n  bake analysis (${Math.ceil(e.remainingMs / 1000)} s left): ${e.result.ok ? 'passed' : `FAILED (${e.failures}/${e.threshold})`}: ${e.result.reason}\n`);
    else if (e.kind === 'rolled-back') process.stderr.write(`\n  ROLLED BACK: ${e.reason}\n${describeOutcome(e.outcome)}\n`);
    else process.stderr.write(`\n  baked: ${e.analyses} analyses passed; ${args.prefix} stays on the service\n`);
  });
}

/** `strangler cutover <prefix> --sync | --shadow | --canary N | --full | --progressive ...` */
export const cutoverCommand: CommandModule<GlobalArgs, ChangeArgs> = {
  command: 'cutover <prefix>',
  describe: 'move a prefix one step: --sync | --shadow | --canary N | --full | --progressive --steps 5,25,50,100 --interval 30s',
  builder: (y) =>
    changeOptions(y)
      .option('sync', { type: 'boolean', describe: 'legacy → syncing (the sync must stream: strangler sync start <service>)' })
      .option('shadow', { type: 'boolean', describe: 'mirror safe requests to the service and diff the answers' })
      .option('canary', { type: 'number', describe: 'send this share (0-100) of users to the service' })
      .option('full', { type: 'boolean', describe: 'switch all traffic to the service' })
      .option('progressive', { type: 'boolean', describe: 'raise the weight step by step with analysis and automatic rollback' })
      .option('methods', { type: 'string', describe: 'with --canary, --full, --progressive: move only these HTTP methods, e.g. GET,HEAD (reads before writes); the others stay on legacy. Default: all methods' })
      .option('steps', { type: 'string', default: DEFAULT_STEPS.join(','), describe: 'progressive: the weights' })
      .option('interval', { type: 'string', default: '30s', describe: 'progressive: traffic analysed per step' })
      .option('max-error-rate', { type: 'number', describe: 'progressive: service error rate limit, percent' })
      .option('max-p99-ms', { type: 'number', describe: 'progressive: service p99 limit, ms' })
      .option('threshold', { type: 'number', default: 2, describe: 'progressive: failed analyses in a row before automatic rollback' })
      .option('resume', { type: 'boolean', describe: 'progressive: continue a run that was interrupted' })
      .option('bake', { type: 'string', describe: 'after the switch (--full, or --progressive reaching 100): keep analysing this long, rolling back on failure, e.g. 5m (default: cutover.bakeSeconds; 0: none)' })
      .option('bake-interval', { type: 'string', describe: 'bake: traffic analysed per analysis (default: cutover.bakeIntervalSeconds)' })
      .example('$0 cutover /api/auth --shadow', '')
      .example('$0 cutover /api/invoices --canary 25 --methods GET,HEAD', 'reads first: writes stay on legacy, no reverse sync needed yet')
      .example('$0 cutover /api/invoices --progressive --steps 5,25,50,100 --interval 30s --max-error-rate 1 --max-p99-ms 800 --threshold 2 --bake 5m', '')
      .example('$0 cutover /api/invoices --full --bake 10m', '') as unknown as Argv<ChangeArgs>,
  handler: (args) =>
    withCutover(args, 'cutover', async ({ cutover }, command) => {
      const bake = args.full || args.progressive || args.resume ? bakeOf(args, cutover.config) : { durationMs: 0, intervalMs: 0 };
      const then = bake.durationMs ? `; then bake ${Math.round(bake.durationMs / 1000)} s (analysed every ${Math.round(bake.intervalMs / 1000)} s, rollback after ${args.threshold ?? 2} failed analyses)` : '';
      if (!command) {
        const steps = stepsOf(args);
        if (args.dryRun) {
          const first = await cutover.change(args.prefix, steps[0] >= 100 ? { kind: 'full', methods: methodsOf(args) } : { kind: 'canary', weight: steps[0], methods: methodsOf(args) }, { dryRun: true, force: args.force, reason: args.reason });
          output(args, first, () => `${describeOutcome(first)}\n  then: ${steps.slice(1).join('% → ')}%, each after ${args.interval} of traffic analysed; rollback after ${args.threshold} failed analyses in a row${then}`);
          return;
        }
        const { runProgressive } = await import('../../cutover/progressive.ts');
        const outcome = await runProgressive(
          cutover,
          args.prefix,
          { steps, intervalMs: parseDuration(args.interval ?? '30s'), threshold: args.threshold ?? 2, maxErrorRate: args.maxErrorRate, maxP99Ms: args.maxP99Ms, resume: args.resume, reason: args.reason, force: args.force, methods: methodsOf(args) },
          (e) => {
            if (args.json) return;
            if (e.kind === 'step') process.stderr.write(`\n${describeOutcome(e.outcome)}\n`);
            else if (e.kind === 'waiting') process.stderr.isTTY && process.stderr.write(`\r  at ${e.weight}%: analysing, ${Math.ceil(e.remainingMs / 1000)} s left   `);
            else if (e.kind === 'analysis') process.stderr.write(`\n  analysis at ${e.weight}%: ${e.result.ok ? 'passed' : `FAILED (${e.failures}/${e.threshold})`}: ${e.result.reason}\n`);
            else if (e.kind === 'rolled-back') process.stderr.write(`\n  ROLLED BACK: ${e.reason}\n${describeOutcome(e.outcome)}\n`);
          },
        );
        finish(args, outcome);
        if (bake.durationMs && outcome.to.phase === 'switched') await bakeAfterSwitch(args, cutover, bake);
        return;
      }
      const outcome = await cutover.change(args.prefix, command, { reason: args.reason, force: args.force, dryRun: args.dryRun });
      if (outcome.dryRun) return output(args, outcome, () => `${describeOutcome(outcome)}${then ? `\n  ${then.slice(2)}` : ''}`);
      finish(args, outcome);
      if (bake.durationMs && outcome.to.phase === 'switched') await bakeAfterSwitch(args, cutover, bake);
    }),
};

export const promoteCommand: CommandModule<GlobalArgs, ChangeArgs> = {
  command: 'promote <prefix>',
  describe: 'take the next step (legacy → syncing → shadow → canary steps → switched → finalized)',
  builder: (y) => changeOptions(y).option('steps', { type: 'string', default: DEFAULT_STEPS.join(',') }) as unknown as Argv<ChangeArgs>,
  handler: (args) =>
    withCutover(args, 'promote', async ({ cutover }) => {
      const steps = stepsOf(args);
      finish(args, await cutover.change(args.prefix, { kind: 'promote', steps }, { reason: args.reason, force: args.force, dryRun: args.dryRun }));
    }),
};

export const rollbackCommand: CommandModule<GlobalArgs, ChangeArgs> = {
  command: 'rollback <prefix>',
  describe: 'route the prefix back to legacy on every gateway (always allowed; --reason required)',
  builder: (y) => changeOptions(y) as unknown as Argv<ChangeArgs>,
  handler: (args) =>
    withCutover(args, 'rollback', async ({ cutover }) => {
      finish(args, await cutover.rollback(args.prefix, args.reason ?? '', { dryRun: args.dryRun }));
    }),
};

export const finalizeCommand: CommandModule<GlobalArgs, ChangeArgs> = {
  command: 'finalize <prefix>',
  describe: 'make the service the system of record (no way back by flag afterwards)',
  builder: (y) => changeOptions(y) as unknown as Argv<ChangeArgs>,
  handler: (args) =>
    withCutover(args, 'finalize', async ({ cutover }) => {
      finish(args, await cutover.change(args.prefix, { kind: 'finalize' }, { reason: args.reason, force: args.force, dryRun: args.dryRun }));
    }),
};
