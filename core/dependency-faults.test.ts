import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from './config/load.ts';
import { explainDependencyFault } from './dependency-faults.ts';
import { DeadlineError } from './deadline.ts';
import { StranglerError } from './errors.ts';

const config = loadConfig(resolve(import.meta.dirname, '../strangler.yaml'), { postgresUrl: 'postgres://postgres@db.internal:5433', redisUrl: 'redis://cache.internal:6380', logLevel: 'silent' });
const pgError = (code: string, message: string) => Object.assign(new Error(message), { code });
const netError = (code: string, address: string, port: number) => Object.assign(new Error(`connect ${code} ${address}:${port}`), { code, address, port });

describe('expected infrastructure faults in one line (issue 19)', () => {
  it.each([
    ['the control database missing', pgError('3D000', 'database "strangler_control" does not exist'), /^the control database "strangler_control" does not exist; create it: strangler control init$/],
    ['a service database missing', pgError('3D000', 'database "svc_auth" does not exist'), /^the database "svc_auth" of auth does not exist; create it: strangler sync start auth/],
    ['the control database refusing connections', pgError('55000', 'database "strangler_control" is not currently accepting connections'), /^the control database "strangler_control" is not accepting connections/],
    ['PostgreSQL refusing connections', netError('ECONNREFUSED', '10.0.0.5', 5433), /^cannot reach PostgreSQL at 10\.0\.0\.5:5433 .*start it or fix postgres\.url/],
    ['Redis refusing connections', netError('ECONNREFUSED', 'cache.internal', 6380), /^Redis at cache\.internal:6380 is unavailable .*fix redis\.url/],
    ['Redis out of retries', Object.assign(new Error('Reached the max retries per request limit (which is 1). Refer to "maxRetriesPerRequest" option for details.'), { name: 'MaxRetriesPerRequestError' }), /^Redis at cache\.internal:6380 is unavailable/],
    ['Redis hung', new Error('Command timed out'), /^Redis at cache\.internal:6380 is unavailable \(Command timed out\)/],
    ['a deadline', new DeadlineError('Redis (PUBLISH)', 2_000), /^Redis \(PUBLISH\) did not answer within 2000 ms; a dependency that hangs counts as down/],
    ['PostgreSQL restarting', pgError('57P01', 'terminating connection due to administrator command'), /^PostgreSQL at db\.internal:5433 is unavailable \(terminating connection/],
  ])('%s', (_, err, expected) => {
    const explained = explainDependencyFault(err, config);
    expect(explained).toBeInstanceOf(StranglerError);
    expect(explained?.code).toBe('NOT_READY');
    expect(explained?.message).toMatch(expected);
    expect(explained?.message).not.toContain('\n');
  });

  it('leaves other errors alone (they keep their stack trace)', () => {
    expect(explainDependencyFault(new TypeError('x is undefined'), config)).toBeNull();
    expect(explainDependencyFault(new StranglerError('refused: …', 'CHECK_FAILED'), config)).toBeNull();
    expect(explainDependencyFault(pgError('23505', 'duplicate key value violates unique constraint'), config)).toBeNull();
  });
});
