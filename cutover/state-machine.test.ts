import { describe, expect, it } from 'vitest';
import { COMMANDS, next, plan, PHASES, routeFor, type CheckResult, type Command, type Phase } from './state-machine.ts';

const commandOf = (kind: (typeof COMMANDS)[number], weight = 25): Command =>
  kind === 'canary' ? { kind, weight } : kind === 'promote' ? { kind, steps: [10, 50, 100] } : ({ kind } as Command);

const statusOf = (phase: Phase) => ({ phase, weight: phase === 'canary' ? 10 : phase === 'switched' || phase === 'finalized' ? 100 : 0 });

/** The whole table, every phase × every command: where it goes, or refused. */
const EXPECTED: Record<Phase, Record<(typeof COMMANDS)[number], Phase | 'refused'>> = {
  legacy: { sync: 'syncing', shadow: 'refused', canary: 'refused', full: 'refused', promote: 'syncing', rollback: 'legacy', finalize: 'refused' },
  syncing: { sync: 'refused', shadow: 'shadow', canary: 'refused', full: 'refused', promote: 'shadow', rollback: 'rolled-back', finalize: 'refused' },
  shadow: { sync: 'refused', shadow: 'shadow', canary: 'canary', full: 'refused', promote: 'canary', rollback: 'rolled-back', finalize: 'refused' },
  canary: { sync: 'refused', shadow: 'refused', canary: 'canary', full: 'switched', promote: 'canary', rollback: 'rolled-back', finalize: 'refused' },
  switched: { sync: 'refused', shadow: 'refused', canary: 'refused', full: 'refused', promote: 'finalized', rollback: 'rolled-back', finalize: 'finalized' },
  finalized: { sync: 'refused', shadow: 'refused', canary: 'refused', full: 'refused', promote: 'refused', rollback: 'refused', finalize: 'refused' },
  'rolled-back': { sync: 'refused', shadow: 'shadow', canary: 'canary', full: 'refused', promote: 'shadow', rollback: 'rolled-back', finalize: 'refused' },
};

describe('the cutover transition table', () => {
  const cases = PHASES.flatMap((phase) => COMMANDS.map((kind) => [phase, kind, EXPECTED[phase][kind]] as const));

  it.each(cases)('from %s, %s → %s', (phase, kind, expected) => {
    const p = plan(statusOf(phase), commandOf(kind));
    if (expected === 'refused') {
      expect(p.ok).toBe(false);
      if (!p.ok) {
        expect(p.reason).toMatch(new RegExp(`phase "${phase}"|no next step`));
        if (phase !== 'finalized' && !p.reason.includes('no next step')) expect(p.reason).toMatch(/legal here: \w+/);
      }
    } else {
      expect(p.ok).toBe(true);
      if (p.ok) expect(p.to.phase).toBe(expected);
    }
  });

  it('explains why a finalized service cannot be rolled back', () => {
    const p = plan(statusOf('finalized'), { kind: 'rollback' });
    expect(p.ok).toBe(false);
    if (!p.ok) expect(p.reason).toContain('no longer sends its writes to legacy');
  });

  it('refuses weights outside 0-100 and a 100% canary, naming what to run instead', () => {
    for (const weight of [-1, 101, 12.5]) {
      const p = plan(statusOf('shadow'), { kind: 'canary', weight });
      expect(p.ok ? '' : p.reason).toMatch(/not a whole number between 0 and 100/);
    }
    const full = plan(statusOf('canary'), { kind: 'canary', weight: 100 });
    expect(full.ok ? '' : full.reason).toMatch(/--full/);
  });

  it('refuses to lower a canary weight, because users who wrote on the service would move back', () => {
    const p = plan({ phase: 'canary', weight: 50 }, { kind: 'canary', weight: 10 });
    expect(p.ok ? '' : p.reason).toMatch(/roll back instead/);
  });

  it('promotes a canary through the configured steps and then switches', () => {
    const steps = [10, 50, 100];
    const a = plan({ phase: 'shadow', weight: 0 }, { kind: 'promote', steps });
    expect(a.ok && a.to).toEqual({ phase: 'canary', weight: 10, methods: null });
    const b = plan({ phase: 'canary', weight: 10 }, { kind: 'promote', steps });
    expect(b.ok && b.to).toEqual({ phase: 'canary', weight: 50, methods: null });
    const c = plan({ phase: 'canary', weight: 50 }, { kind: 'promote', steps });
    expect(c.ok && c.to).toEqual({ phase: 'switched', weight: 100, methods: null });
  });

  it('starts reverse sync before the first write can reach the service', () => {
    const p = plan({ phase: 'shadow', weight: 0 }, { kind: 'canary', weight: 5 });
    expect(p.ok && p.actions.map((a) => a.kind)).toEqual(['start-reverse-sync', 'set-route', 'record-phase']);
  });

  it('fences writes before the route flips on a switch and on a rollback from canary', () => {
    const sw = plan({ phase: 'canary', weight: 50 }, { kind: 'full' });
    expect(sw.ok && sw.actions.map((a) => a.kind)).toEqual(['fence-writes', 'set-route', 'record-phase']);
    const rb = plan({ phase: 'canary', weight: 50 }, { kind: 'rollback' });
    expect(rb.ok && rb.actions).toEqual([
      { kind: 'fence-writes' },
      { kind: 'set-route', mode: 'legacy', weight: 0, methods: null },
      { kind: 'record-phase', phase: 'rolled-back' },
    ]);
  });

  it('routes to legacy first and records the phase after (rule 8)', () => {
    const rb = plan({ phase: 'shadow', weight: 0 }, { kind: 'rollback' });
    const kinds = rb.ok ? rb.actions.map((a) => a.kind) : [];
    expect(kinds.indexOf('set-route')).toBeLessThan(kinds.indexOf('record-phase'));
  });

  it('maps each phase to the route mode the gateways serve', () => {
    expect(routeFor({ phase: 'syncing', weight: 0 })).toEqual({ mode: 'legacy', weight: 0, methods: null });
    expect(routeFor({ phase: 'shadow', weight: 0 })).toEqual({ mode: 'shadow', weight: 0, methods: null });
    expect(routeFor({ phase: 'canary', weight: 25 })).toEqual({ mode: 'canary', weight: 25, methods: null });
    expect(routeFor({ phase: 'switched', weight: 100 })).toEqual({ mode: 'service', weight: 100, methods: null });
    expect(routeFor({ phase: 'rolled-back', weight: 0 })).toEqual({ mode: 'legacy', weight: 0, methods: null });
  });
});

describe('next(): the decision from observations', () => {
  const pass = (name: CheckResult['name']): CheckResult => ({ name, ok: true, retriable: false, reason: 'ok' });
  const shadowChecks = ['service-health', 'sync-lag', 'sync-verified', 'gateways-reachable'] as const;

  it('goes when every check the transition needs passed', () => {
    const r = next({ phase: 'syncing', weight: 0 }, { kind: 'shadow' }, shadowChecks.map(pass));
    expect('status' in r && r.status).toEqual({ phase: 'shadow', weight: 0, methods: null });
  });

  it('refuses with every failed check reason, and treats a check not run as failed (fail closed)', () => {
    const obs = [pass('service-health'), { name: 'sync-lag', ok: false, retriable: true, reason: 'lag 9 s > 5 s' } as CheckResult];
    const r = next({ phase: 'syncing', weight: 0 }, { kind: 'shadow' }, obs);
    expect('refused' in r && r.refused).toContain('sync-lag: lag 9 s > 5 s');
    expect('refused' in r && r.refused).toContain('sync-verified: check was not run');
  });

  it('goes despite failed checks when forced, and reports them for the audit', () => {
    const r = next({ phase: 'syncing', weight: 0 }, { kind: 'shadow' }, [], { force: true });
    expect('status' in r && r.failed.length).toBe(4);
  });

  it('needs no check to roll back', () => {
    const r = next({ phase: 'canary', weight: 50 }, { kind: 'rollback' }, []);
    expect('status' in r && r.status.phase).toBe('rolled-back');
  });
});

describe('method-scoped canary: reads move before writes', () => {
  const reads = ['GET', 'HEAD'] as const;
  const kinds = (p: ReturnType<typeof plan>) => (p.ok ? p.actions.map((a) => a.kind) : p.reason);

  it('moves reads without the reverse sync or the id check, and carries the scope on the route', () => {
    const p = plan({ phase: 'shadow', weight: 0 }, { kind: 'canary', weight: 25, methods: reads });
    expect(p.ok && p.to).toEqual({ phase: 'canary', weight: 25, methods: reads });
    expect(kinds(p)).toEqual(['set-route', 'record-phase']);
    expect(p.ok && p.actions[0]).toEqual({ kind: 'set-route', mode: 'canary', weight: 25, methods: reads });
    expect(p.ok && p.checks).not.toContain('id-ranges');
    expect(p.ok && p.checks).toContain('shadow-mismatch');
  });

  it('treats a scope holding any write method as taking writes: reverse sync and id check as today', () => {
    const p = plan({ phase: 'shadow', weight: 0 }, { kind: 'canary', weight: 25, methods: ['GET', 'POST'] });
    expect(kinds(p)).toEqual(['start-reverse-sync', 'set-route', 'record-phase']);
    expect(p.ok && p.checks).toContain('id-ranges');
  });

  it('keeps the scope across promote steps, and asks for the writes\' own canary once every read is moved', () => {
    const steps = [10, 50, 100];
    const b = plan({ phase: 'canary', weight: 10, methods: reads }, { kind: 'promote', steps });
    expect(b.ok && b.to).toEqual({ phase: 'canary', weight: 50, methods: reads });
    // The last step of a reads-only canary moves every user's reads: no switch, no fence.
    const c = plan({ phase: 'canary', weight: 50, methods: reads }, { kind: 'promote', steps });
    expect(c.ok && c.to).toEqual({ phase: 'canary', weight: 100, methods: reads });
    expect(kinds(c)).toEqual(['set-route', 'record-phase']);
    const d = plan({ phase: 'canary', weight: 100, methods: reads }, { kind: 'promote', steps });
    expect(d.ok ? '' : d.reason).toMatch(/GET,HEAD requests are on the service already; the other methods follow with their own canary: cutover <prefix> --canary 10/);
  });

  it('lets a scoped --full or --canary 100 move every user\'s reads, and a plain --full switch from there with the fence', () => {
    const full = plan({ phase: 'shadow', weight: 0 }, { kind: 'full', methods: reads });
    expect(full.ok && full.to).toEqual({ phase: 'canary', weight: 100, methods: reads });
    const hundred = plan({ phase: 'shadow', weight: 0 }, { kind: 'canary', weight: 100, methods: reads });
    expect(hundred.ok && hundred.to).toEqual({ phase: 'canary', weight: 100, methods: reads });
    const sw = plan({ phase: 'canary', weight: 100, methods: reads }, { kind: 'full', methods: null });
    expect(sw.ok && sw.to).toEqual({ phase: 'switched', weight: 100, methods: null });
    expect(kinds(sw)).toEqual(['start-reverse-sync', 'fence-writes', 'set-route', 'record-phase']);
  });

  it('starts the writes\' own canary (all methods) with the reverse sync, at any weight: nobody wrote on the service yet', () => {
    const w = plan({ phase: 'canary', weight: 100, methods: reads }, { kind: 'canary', weight: 5, methods: null });
    expect(w.ok && w.to).toEqual({ phase: 'canary', weight: 5, methods: null });
    expect(kinds(w)).toEqual(['start-reverse-sync', 'set-route', 'record-phase']);
    expect(w.ok && w.checks).toContain('id-ranges');
  });

  it('refuses to narrow a canary that takes writes to reads: its writers would move back to legacy', () => {
    const p = plan({ phase: 'canary', weight: 25, methods: null }, { kind: 'canary', weight: 25, methods: reads });
    expect(p.ok ? '' : p.reason).toMatch(/scoping the canary to GET,HEAD would move the POST, PUT, PATCH, DELETE requests of users who already wrote on the service back to legacy/);
  });

  it('rolls a reads-only canary back with no fence, and clears the scope', () => {
    const rb = plan({ phase: 'canary', weight: 25, methods: reads }, { kind: 'rollback' });
    expect(rb.ok && rb.actions).toEqual([
      { kind: 'set-route', mode: 'legacy', weight: 0, methods: null },
      { kind: 'record-phase', phase: 'rolled-back' },
    ]);
    expect(routeFor({ phase: 'canary', weight: 25, methods: reads })).toEqual({ mode: 'canary', weight: 25, methods: reads });
  });

  it('refuses unknown methods and an empty scope', () => {
    const bad = plan({ phase: 'shadow', weight: 0 }, { kind: 'canary', weight: 5, methods: ['GET', 'FETCH'] });
    expect(bad.ok ? '' : bad.reason).toMatch(/unknown HTTP method FETCH in --methods; use any of GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE/);
    const empty = plan({ phase: 'shadow', weight: 0 }, { kind: 'canary', weight: 5, methods: [] });
    expect(empty.ok ? '' : empty.reason).toMatch(/the method scope is empty/);
  });
});
