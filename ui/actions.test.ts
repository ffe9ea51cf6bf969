import { describe, expect, it } from 'vitest';
import { parseAction } from './actions.ts';

describe('the body of a dashboard action', () => {
  it.each([
    ['rollback', { prefix: '/api/auth' }, 'rollback needs a reason: it is recorded in the audit log'],
    ['rollback', { prefix: 'api/auth', reason: 'x' }, 'name the prefix: {"prefix": "/api/...", "reason": "..."}'],
    ['promote', { prefix: '/api/auth', steps: [50, 25, 100] }, 'steps must rise, got 50,25,100'],
    ['promote', { prefix: '/api/auth', steps: ['5'] }, 'steps must be a list of weights, e.g. [5, 25, 50, 100]'],
    ['promote', { prefix: '/api/auth', reason: 'x'.repeat(501) }, 'the reason is 501 characters; keep it under 500'],
    ['finalize', { prefix: '/api/auth', reason: 'x' }, 'unknown action "finalize"; the dashboard can promote or rollback'],
  ])('refuses %s %j, saying what is wrong', (action, body, message) => {
    expect(() => parseAction(action, body)).toThrow(message);
  });

  it('takes a promote without a reason and a rollback with one, trimmed', () => {
    expect(parseAction('promote', { prefix: '/api/auth' })).toEqual({ action: 'promote', prefix: '/api/auth', reason: '', steps: undefined });
    expect(parseAction('rollback', { prefix: '/api/auth', reason: '  p99 up ' })).toMatchObject({ reason: 'p99 up' });
  });
});
