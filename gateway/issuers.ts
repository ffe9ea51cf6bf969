import { readFileSync } from 'node:fs';
import type { ResolvedConfig } from '../core/config/load.ts';
import { readSecretFile, secretProblem } from '../core/config/secrets.ts';
import { StranglerError } from '../core/errors.ts';
import type { IssuerSpec, KeyAlgorithm, HmacAlgorithm } from './token-verifier.ts';

/**
 * The issuers whose tokens the gateway accepts, from strangler.yaml: the monolith's
 * (legacy.jwt*: its secret, algorithms, issuer or none, user id claim), gateway.jwks, and
 * gateway.auth.issuers (public keys from a PEM file or a JWKS URL, HMAC secrets from files).
 * Read once, at start: a missing file or a weak secret stops the gateway with one line.
 */
export function issuersOf(config: ResolvedConfig, legacySecret: string): IssuerSpec[] {
  const g = config.gateway;
  const specs: IssuerSpec[] = [
    {
      name: 'legacy',
      kind: 'secret',
      secret: legacySecret,
      algorithms: config.legacy.jwtAlgorithms,
      issuer: config.legacy.jwtIssuer || null,
      audience: config.legacy.jwtAudience ?? g.audience,
      userIdClaim: config.legacy.jwtUserIdClaim,
    },
  ];
  if (g.jwks) specs.push({ name: 'jwks', kind: 'jwks', jwksUrl: g.jwks.url, algorithms: ['RS256'], issuer: g.jwks.issuer, audience: g.audience, userIdClaim: 'sub' });
  g.auth.issuers.forEach((i, n) => {
    const at = `gateway.auth.issuers[${n}] (${i.name})`;
    const common = { name: i.name, issuer: i.issuer || null, audience: i.audience ?? g.audience, userIdClaim: i.userIdClaim };
    if (i.secretFile) {
      const secret = readSecretFile(i.secretFile, `${at}.secretFile`);
      const problem = secretProblem(`${at}.secretFile`, secret);
      if (problem) throw new StranglerError(problem, 'CONFIG_INVALID');
      specs.push({ ...common, kind: 'secret', secret, algorithms: i.algorithms as HmacAlgorithm[] });
    } else if (i.publicKeyFile) {
      let pem: string;
      try {
        pem = readFileSync(i.publicKeyFile, 'utf8');
      } catch (err) {
        throw new StranglerError(`${at}.publicKeyFile ${i.publicKeyFile}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, 'CONFIG_INVALID');
      }
      specs.push({ ...common, kind: 'pem', publicKey: pem, algorithms: i.algorithms as KeyAlgorithm[] });
    } else if (i.jwksUrl) {
      specs.push({ ...common, kind: 'jwks', jwksUrl: i.jwksUrl, algorithms: i.algorithms as KeyAlgorithm[] });
    }
  });
  return specs;
}
