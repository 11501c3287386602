import { Hono } from 'hono';
import { z } from 'zod';
import { badRequest, notFound, Problem } from '../../problem.ts';
import type { AppEnv, GatewayDeps } from '../context.ts';
import { requireScope } from '../middleware/auth.ts';

const tenantRef = z.string().regex(/^[a-z0-9_-]{1,64}$/, 'a tenant id or name');

/**
 * A tenant's own data keys. An admin of the tenant may list them (never their bytes) and crypto-shred
 * them; another tenant's keys do not exist as far as the caller can tell.
 */
export function tenantRoutes(deps: GatewayDeps) {
  const own = (c: {
    req: { param(name: 'tenant'): string };
    get(key: 'principal'): AppEnv['Variables']['principal'];
  }) => {
    const ref = tenantRef.safeParse(c.req.param('tenant'));
    if (!ref.success)
      throw badRequest('invalid-tenant', `"${c.req.param('tenant')}" is not ${ref.error.issues[0]?.message}`);
    const principal = c.get('principal');
    if (ref.data !== principal.tenantId && ref.data !== principal.tenantName)
      throw notFound(`tenant ${ref.data}`);
    return principal;
  };
  return new Hono<AppEnv>()
    .use(requireScope(deps.db, 'admin'))
    .get('/:tenant/data-key', async (c) => {
      const principal = own(c);
      const keys = await deps.keyring.list(principal.tenantId);
      return c.json({
        tenant: principal.tenantName,
        tenantId: principal.tenantId,
        kek: deps.keyring.kek.id,
        keys,
      });
    })
    .delete('/:tenant/data-key', async (c) => {
      const principal = own(c);
      const shredded = await deps.keyring.shred(principal.tenantId);
      if (!shredded.length)
        throw new Problem(
          404,
          'no-data-key',
          'Not found',
          `tenant ${principal.tenantName} has no data key to shred`,
        );
      deps.logger.warn({ tenant: principal.tenantId, shredded }, 'data keys shredded');
      return c.json({ tenant: principal.tenantName, tenantId: principal.tenantId, shredded });
    });
}
