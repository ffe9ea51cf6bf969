import type { ChangeOutcome } from './executor.ts';
import { scopeLabel } from './state-machine.ts';

/**
 * The words and the exit code of a change's outcome, one definition for every place that shows
 * one: the CLI's cutover, promote, rollback and finalize, and the dashboard's actions (ui/), so
 * that the page says what the terminal would.
 */
export function describeOutcome(o: ChangeOutcome): string {
  const at = (s: ChangeOutcome['from']) => `${s.phase}${s.phase === 'canary' ? ` ${s.weight}%${scopeLabel(s.methods)}` : ''}`;
  const lines = [`${o.dryRun ? 'dry run: would ' : ''}${o.command} ${o.prefix} (${o.service}): ${at(o.from)} → ${at(o.to)}`];
  if (o.checks.length) lines.push(...o.checks.map((c) => `  ${c.ok ? 'ok  ' : o.forced ? 'FORCED' : 'FAIL'} ${c.name}: ${c.reason}`));
  if (o.dryRun) lines.push(`  actions: ${o.actions.map((a) => (a.kind === 'set-route' ? `set-route ${a.mode}${a.mode === 'canary' ? ` ${a.weight}%${scopeLabel(a.methods)}` : ''}` : a.kind)).join(' → ')}`);
  for (const w of o.warnings) lines.push(`  warning: ${w}`);
  if (o.propagation) {
    const p = o.propagation;
    if (p.error) lines.push(`  applied (route v${p.version}), NOT CONFIRMED by the gateways: ${p.error}`);
    else lines.push(`  applied on ${p.acknowledged}/${p.live} gateways in ${p.ms} ms (route v${p.version})${p.complete ? '' : `; not acknowledged by: ${p.missing.join(', ')}`}`);
    if (o.writeHoldMs !== undefined) lines.push(`  writes to ${o.prefix} were held for ${o.writeHoldMs} ms`);
  } else if (!o.dryRun) lines.push('  recorded (the route did not change)');
  return lines.join('\n');
}

/** 3: applied but not confirmed by every live gateway; 0 otherwise (a refusal throws, exit 2). */
export function outcomeExitCode(o: ChangeOutcome): 0 | 3 {
  return o.propagation && !o.propagation.complete ? 3 : 0;
}
