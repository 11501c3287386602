import type { MiddlewareHandler } from 'hono';
import { authenticate, hasScope, type Scope } from '../../auth/tokens.ts';
import type { Db } from '../../../db/client.ts';
import { Problem } from '../../problem.ts';
import type { AppEnv } from '../context.ts';

const unauthorized = (detail: string) => new Problem(401, 'unauthorized', 'Unauthorized', detail, {});

/** Requires a valid bearer token of the caller's tenant, holding `scope` (admin implies every scope). */
export function requireScope(db: Db, scope: Scope | 'any'): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const header = c.req.header('authorization');
    if (!header) {
      c.header('WWW-Authenticate', 'Bearer realm="ebcc"');
      throw unauthorized('an API token is required: send "Authorization: Bearer <token>"');
    }
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    const result = match ? await authenticate(db, match[1]!) : 'malformed';
    if (typeof result === 'string') {
      c.header('WWW-Authenticate', `Bearer realm="ebcc", error="invalid_token"`);
      const why = {
        malformed: 'is malformed',
        unknown: 'is not valid',
        revoked: 'has been revoked',
        expired: 'has expired',
      }[result];
      throw unauthorized(`the API token ${why}`);
    }
    if (scope !== 'any' && !hasScope(result, scope)) {
      throw new Problem(
        403,
        'insufficient-scope',
        'Forbidden',
        `this operation needs a token with the "${scope}" scope`,
        {
          requiredScope: scope,
        },
      );
    }
    c.set('principal', result);
    await next();
  };
}
