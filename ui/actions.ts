import { exitCodeFor, httpStatusFor, StranglerError, type ErrorCode } from '../core/errors.ts';
import type { ChangeOutcome, Cutover } from '../cutover/executor.ts';
import { describeOutcome, outcomeExitCode } from '../cutover/outcome-text.ts';
import { validateSteps } from '../cutover/progressive.ts';

/** A dashboard action as the page posts it. */
export interface ActionRequest {
  action: 'promote' | 'rollback';
  prefix: string;
  reason: string;
  /** promote: the canary steps (absent: the state machine's DEFAULT_STEPS, as the CLI's). */
  steps?: number[];
}

/** What the page shows: the CLI's words and exit code for the same change. */
export type ActionResult = { ok: true; exitCode: 0 | 3; text: string; outcome: ChangeOutcome } | { ok: false; exitCode: number; code: ErrorCode | 'INTERNAL'; text: string };

const MAX_REASON = 500;

/** Pure: the body of a POST /api/actions/<action>, checked; a StranglerError (BAD_INPUT) says what is wrong. */
export function parseAction(action: string, body: unknown): ActionRequest {
  if (action !== 'promote' && action !== 'rollback') throw new StranglerError(`unknown action "${action}"; the dashboard can promote or rollback`, 'NOT_FOUND');
  const b = (body ?? {}) as Record<string, unknown>;
  if (typeof b.prefix !== 'string' || !b.prefix.startsWith('/')) throw new StranglerError('name the prefix: {"prefix": "/api/...", "reason": "..."}', 'BAD_INPUT');
  const reason = typeof b.reason === 'string' ? b.reason.trim() : '';
  if (action === 'rollback' && !reason) throw new StranglerError('rollback needs a reason: it is recorded in the audit log', 'BAD_INPUT');
  if (reason.length > MAX_REASON) throw new StranglerError(`the reason is ${reason.length} characters; keep it under ${MAX_REASON}`, 'BAD_INPUT');
  let steps: number[] | undefined;
  if (b.steps !== undefined) {
    if (!Array.isArray(b.steps) || b.steps.some((s) => typeof s !== 'number')) throw new StranglerError('steps must be a list of weights, e.g. [5, 25, 50, 100]', 'BAD_INPUT');
    steps = b.steps as number[];
    const bad = validateSteps(steps);
    if (bad) throw new StranglerError(bad.replace('--steps', 'steps'), 'BAD_INPUT');
  }
  return { action, prefix: b.prefix, reason, steps };
}

/**
 * Runs an action through the same control-plane function as `strangler promote` and
 * `strangler rollback` (same checks, audit row, lock and acknowledgement wait), and says the
 * outcome as the CLI would: its text and its exit code (0, 2 refused, 3 not confirmed by every
 * gateway, 1 anything else).
 */
export async function runAction(cutover: Cutover, req: ActionRequest): Promise<ActionResult> {
  try {
    const outcome =
      req.action === 'rollback'
        ? await cutover.rollback(req.prefix, req.reason)
        : await cutover.change(req.prefix, { kind: 'promote', steps: req.steps }, { reason: req.reason || null });
    return { ok: true, exitCode: outcomeExitCode(outcome), text: describeOutcome(outcome), outcome };
  } catch (err) {
    const code = err instanceof StranglerError ? err.code : 'INTERNAL';
    return { ok: false, exitCode: exitCodeFor(err), code, text: `error [${code}]: ${(err as Error).message}` };
  }
}

/** The HTTP status of an action's result: 200 when applied, else the error table's. */
export function actionStatus(r: ActionResult): number {
  return r.ok ? 200 : httpStatusFor(r.code);
}
