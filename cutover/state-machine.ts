import { HTTP_METHODS, readsOnly, SAFE_METHODS, type RouteMode } from '../gateway/route-types.ts';

/**
 * The cutover state machine of one service, as one explicit transition table and a pure
 * `next()`. Nothing here does I/O: the executor (cutover/executor.ts) gathers observations
 * (check results), calls `next`, then applies the returned actions in order.
 */

export const PHASES = [
  /** All traffic to the monolith; nothing is synced yet. */
  'legacy',
  /** Forward sync (legacy → service DB) runs; traffic still all on legacy. */
  'syncing',
  /** Served by legacy; safe requests mirrored to the service and the answers diffed. */
  'shadow',
  /**
   * A sticky share of users (the weight) is served by the service; reverse sync keeps legacy whole.
   * Scoped to methods (reads only), the service takes no write and needs no reverse sync yet.
   */
  'canary',
  /** All traffic to the service; legacy still receives every write, so rollback loses nothing. */
  'switched',
  /** The service is the system of record; reverse sync stopped; no way back by flag. */
  'finalized',
  /** Traffic back on legacy after a rollback; the forward sync keeps running for a later retry. */
  'rolled-back',
] as const;
export type Phase = (typeof PHASES)[number];

export const COMMANDS = ['sync', 'shadow', 'canary', 'full', 'promote', 'rollback', 'finalize'] as const;
export type CommandKind = (typeof COMMANDS)[number];

/**
 * The methods a canary applies to (the rest stay on legacy): null for all methods; absent on a
 * command, the current scope is kept (promote).
 */
export type MethodScope = readonly string[] | null;

export type Command =
  | { kind: 'sync' }
  | { kind: 'shadow' }
  | { kind: 'canary'; weight: number; methods?: MethodScope }
  | { kind: 'full'; methods?: MethodScope }
  | { kind: 'promote'; steps?: readonly number[] }
  | { kind: 'rollback' }
  | { kind: 'finalize' };

/** The checks a transition needs; cutover/checks.ts runs them. */
export const CHECKS = [
  'replication-ready',
  'service-health',
  'sync-lag',
  'sync-verified',
  'shadow-mismatch',
  'canary-analysis',
  'depends-on-switched',
  'gateways-reachable',
  /** After the switch: the switched prefix analysed against legacy's figures from before it (cutover/bake.ts). */
  'bake-analysis',
  /** Before the service takes writes: its tables' id generators cannot meet the monolith's ids. */
  'id-ranges',
] as const;
export type CheckName = (typeof CHECKS)[number];

/** A check's verdict: not retriable → stop or roll back; retriable → count against a threshold. */
export interface CheckResult {
  name: CheckName;
  ok: boolean;
  retriable: boolean;
  reason: string;
}

export interface ServiceStatus {
  phase: Phase;
  /** Canary weight 0-100 (0 outside canary, 100 once switched). */
  weight: number;
  /** The canary's method scope (null or absent: all methods; always null outside canary). */
  methods?: MethodScope;
}

/** Pure: whether the service takes writes in this status (a canary scoped to reads takes none). */
export function writesReachService(status: ServiceStatus): boolean {
  return (status.phase === 'canary' || status.phase === 'switched') && !readsOnly(status.methods);
}

/** "" for all methods, else " (GET,HEAD)": how status, plan and outcomes print a scope. */
export function scopeLabel(methods: MethodScope | undefined): string {
  return methods ? ` (${methods.join(',')})` : '';
}

export type Action =
  | { kind: 'start-forward-sync' }
  | { kind: 'start-reverse-sync' }
  | { kind: 'stop-reverse-sync' }
  | { kind: 'fence-writes' }
  | { kind: 'set-route'; mode: RouteMode; weight: number; methods: MethodScope }
  | { kind: 'record-phase'; phase: Phase };

interface Transition {
  to: Phase;
  checks: readonly CheckName[];
}

/** Before a share of users is served by the service, which then takes their writes too. */
const TRAFFIC_CHECKS = ['service-health', 'sync-lag', 'sync-verified', 'depends-on-switched', 'gateways-reachable', 'id-ranges'] as const;

/**
 * Every allowed transition. A (phase, command) pair not listed is refused, and the refusal
 * names the commands that are legal in that phase. `promote` and `rollback` are resolved to
 * one of these in `resolveCommand`.
 */
export const TRANSITIONS: Readonly<Record<Phase, Partial<Record<CommandKind, Transition>>>> = {
  legacy: {
    sync: { to: 'syncing', checks: ['replication-ready'] },
    // Rollback is always allowed; from legacy it re-asserts the legacy route (idempotent).
    rollback: { to: 'legacy', checks: [] },
  },
  syncing: {
    shadow: { to: 'shadow', checks: ['service-health', 'sync-lag', 'sync-verified', 'gateways-reachable'] },
    rollback: { to: 'rolled-back', checks: [] },
  },
  shadow: {
    shadow: { to: 'shadow', checks: [] },
    canary: { to: 'canary', checks: [...TRAFFIC_CHECKS, 'shadow-mismatch'] },
    rollback: { to: 'rolled-back', checks: [] },
  },
  canary: {
    canary: { to: 'canary', checks: [...TRAFFIC_CHECKS, 'canary-analysis'] },
    full: { to: 'switched', checks: [...TRAFFIC_CHECKS, 'canary-analysis'] },
    rollback: { to: 'rolled-back', checks: [] },
  },
  switched: {
    finalize: { to: 'finalized', checks: ['service-health'] },
    rollback: { to: 'rolled-back', checks: [] },
  },
  finalized: {},
  'rolled-back': {
    shadow: { to: 'shadow', checks: ['service-health', 'sync-lag', 'sync-verified', 'gateways-reachable'] },
    canary: { to: 'canary', checks: [...TRAFFIC_CHECKS] },
    rollback: { to: 'rolled-back', checks: [] },
  },
};

export const DEFAULT_STEPS = [5, 25, 50, 100] as const;

/** What a command would do from a status: the concrete command, target status and checks, or why not. */
export type Plan =
  | { ok: true; command: Exclude<Command, { kind: 'promote' }>; from: ServiceStatus; to: ServiceStatus; checks: readonly CheckName[]; actions: Action[] }
  | { ok: false; reason: string };

/** `promote` is "the next step": resolved here to a concrete command. */
export function resolveCommand(status: ServiceStatus, command: Command): Exclude<Command, { kind: 'promote' }> | { error: string } {
  const resolved = resolveStep(status, command);
  if ('error' in resolved || (resolved.kind !== 'canary' && resolved.kind !== 'full')) return resolved;
  // No scope given: the canary's own is kept (promote steps); a new canary starts with all methods.
  const methods = resolved.methods !== undefined ? resolved.methods : status.phase === 'canary' ? (status.methods ?? null) : null;
  // A scoped "switch" moves only those methods: a canary of all their users, the rest stay on legacy.
  if (resolved.kind === 'full' && methods) return { kind: 'canary', weight: 100, methods };
  return { ...resolved, methods };
}

function resolveStep(status: ServiceStatus, command: Command): Exclude<Command, { kind: 'promote' }> | { error: string } {
  if (command.kind !== 'promote') return command;
  const steps = command.steps?.length ? command.steps : DEFAULT_STEPS;
  switch (status.phase) {
    case 'legacy':
      return { kind: 'sync' };
    case 'syncing':
    case 'rolled-back':
      return { kind: 'shadow' };
    case 'shadow':
      return { kind: 'canary', weight: steps[0] };
    case 'canary': {
      if (status.methods && status.weight >= 100) {
        return { error: `every user's ${status.methods.join(',')} requests are on the service already; the other methods follow with their own canary: cutover <prefix> --canary ${steps[0]} (all methods)` };
      }
      const nextWeight = steps.find((w) => w > status.weight);
      return nextWeight === undefined || nextWeight >= 100 ? { kind: 'full' } : { kind: 'canary', weight: nextWeight };
    }
    case 'switched':
      return { kind: 'finalize' };
    case 'finalized':
      return { error: 'the service is finalized; there is no next step' };
  }
}

export function legalCommands(phase: Phase): CommandKind[] {
  const direct = Object.keys(TRANSITIONS[phase]) as CommandKind[];
  return phase === 'finalized' ? [] : [...direct, 'promote'];
}

/** Pure: what is wrong with a command whatever the phase (a weight out of range), or null. Checked before any I/O. */
export function commandProblem(command: Command): string | null {
  if (command.kind !== 'canary' && command.kind !== 'full') return null;
  if (command.methods) {
    if (command.methods.length === 0) return 'the method scope is empty; name the methods to move, e.g. --methods GET,HEAD';
    const unknown = command.methods.filter((m) => !(HTTP_METHODS as readonly string[]).includes(m));
    if (unknown.length) return `unknown HTTP method${unknown.length === 1 ? '' : 's'} ${unknown.join(', ')} in --methods; use any of ${HTTP_METHODS.join(', ')}`;
  }
  if (command.kind !== 'canary') return null;
  if (!(Number.isInteger(command.weight) && command.weight >= 0 && command.weight <= 100)) return `weight ${command.weight} is not a whole number between 0 and 100`;
  // Scoped, 100% moves only those methods; the other methods stay on legacy, so it is no switch.
  if (command.weight === 100 && !command.methods) return 'a canary of 100% is a switch; run: cutover <prefix> --full (it fences writes and drains the sync)';
  return null;
}

/** Pure planning: from a status and a command, the target status, the checks it needs and the actions. */
export function plan(status: ServiceStatus, command: Command): Plan {
  const resolved = resolveCommand(status, command);
  if ('error' in resolved) return { ok: false, reason: resolved.error };
  const problem = commandProblem(resolved);
  if (problem && !(resolved.kind === 'canary' && resolved.weight === 100 && !resolved.methods)) return { ok: false, reason: problem };
  const transition = TRANSITIONS[status.phase][resolved.kind];
  if (!transition) {
    const legal = legalCommands(status.phase);
    const why =
      status.phase === 'finalized'
        ? '; a finalized service no longer sends its writes to legacy, so no flag flip can bring legacy back without losing them'
        : '';
    return {
      ok: false,
      reason: `cannot ${describe(resolved)} while the service is in phase "${status.phase}"; legal here: ${legal.length ? legal.join(', ') : 'none'}${why}`,
    };
  }
  if (problem) return { ok: false, reason: problem };
  // Users who wrote on the service must stay there: a canary taking writes neither shrinks nor drops a write method.
  const scope = resolved.kind === 'canary' ? (resolved.methods ?? null) : null;
  if (resolved.kind === 'canary' && status.phase === 'canary' && writesReachService(status)) {
    if (resolved.weight < status.weight) {
      return {
        ok: false,
        reason: `lowering the weight from ${status.weight} to ${resolved.weight} would move users who already wrote on the service back to legacy; roll back instead: rollback <prefix> --reason ...`,
      };
    }
    const dropped = scope ? (status.methods ?? HTTP_METHODS).filter((m) => !SAFE_METHODS.has(m) && !scope.includes(m)) : [];
    if (dropped.length) {
      return { ok: false, reason: `scoping the canary to ${scope!.join(',')} would move the ${dropped.join(', ')} requests of users who already wrote on the service back to legacy; roll back instead: rollback <prefix> --reason ...` };
    }
  }
  const to: ServiceStatus = { phase: transition.to, weight: targetWeight(transition.to, resolved), methods: transition.to === 'canary' ? scope : null };
  // A reads-only step creates no row on the service: its ids cannot meet the monolith's.
  const checks = readsOnly(to.methods) ? transition.checks.filter((c) => c !== 'id-ranges') : transition.checks;
  return { ok: true, command: resolved, from: status, to, checks, actions: actionsFor(status, to) };
}

/**
 * The decision: given the plan's check results, go (with the actions) or refuse. A forced
 * command goes despite failed checks; the executor records it as forced.
 */
export function next(
  status: ServiceStatus,
  command: Command,
  observations: readonly CheckResult[],
  options: { force?: boolean } = {},
): { status: ServiceStatus; actions: Action[]; failed: CheckResult[] } | { refused: string; failed: CheckResult[] } {
  const p = plan(status, command);
  if (!p.ok) return { refused: p.reason, failed: [] };
  const missing = p.checks.filter((name) => !observations.some((o) => o.name === name));
  const failed = [
    ...observations.filter((o) => p.checks.includes(o.name) && !o.ok),
    ...missing.map((name): CheckResult => ({ name, ok: false, retriable: true, reason: 'check was not run' })),
  ];
  if (failed.length && !options.force) {
    return { refused: failed.map((f) => `${f.name}: ${f.reason}`).join('; '), failed };
  }
  return { status: p.to, actions: p.actions, failed };
}

/** The route mode a phase implies. */
export function routeFor(status: ServiceStatus): { mode: RouteMode; weight: number; methods: MethodScope } {
  switch (status.phase) {
    case 'shadow':
      return { mode: 'shadow', weight: 0, methods: null };
    case 'canary':
      return { mode: 'canary', weight: status.weight, methods: status.methods ?? null };
    case 'switched':
    case 'finalized':
      return { mode: 'service', weight: 100, methods: null };
    default:
      return { mode: 'legacy', weight: 0, methods: null };
  }
}

function targetWeight(phase: Phase, command: Exclude<Command, { kind: 'promote' }>): number {
  if (phase === 'canary' && command.kind === 'canary') return command.weight;
  if (phase === 'switched' || phase === 'finalized') return 100;
  return 0;
}

/**
 * Ordering matters: reverse sync starts before the first write can reach the service (a canary
 * scoped to reads sends it none, so it waits for the step that moves writes); a switch or a
 * rollback of a service that took writes fences them before the route flips; the route always
 * flips before the phase is recorded (rule 8: route to legacy first, then record).
 */
function actionsFor(from: ServiceStatus, to: ServiceStatus): Action[] {
  const actions: Action[] = [];
  const takesWritesBefore = writesReachService(from);
  const takesWritesAfter = writesReachService(to);
  if (to.phase === 'syncing') actions.push({ kind: 'start-forward-sync' });
  if (takesWritesAfter && !takesWritesBefore) actions.push({ kind: 'start-reverse-sync' });
  if ((to.phase === 'switched' && from.phase !== 'switched') || (to.phase === 'rolled-back' && takesWritesBefore)) {
    actions.push({ kind: 'fence-writes' });
  }
  const route = routeFor(to);
  const fromRoute = routeFor(from);
  if (route.mode !== fromRoute.mode || route.weight !== fromRoute.weight || scopeLabel(route.methods) !== scopeLabel(fromRoute.methods) || to.phase === 'rolled-back') {
    actions.push({ kind: 'set-route', ...route });
  }
  if (to.phase === 'finalized') actions.push({ kind: 'stop-reverse-sync' });
  actions.push({ kind: 'record-phase', phase: to.phase });
  return actions;
}

function describe(command: Exclude<Command, { kind: 'promote' }>): string {
  switch (command.kind) {
    case 'sync':
      return 'start the sync';
    case 'shadow':
      return 'start shadowing';
    case 'canary':
      return `set a canary of ${command.weight}%${scopeLabel(command.methods)}`;
    case 'full':
      return 'switch fully to the service';
    case 'rollback':
      return 'roll back';
    case 'finalize':
      return 'finalize';
  }
}
