import { Hono } from 'hono';
import { z } from 'zod';
import { issueToken, listTokens, parseExpiry, revokeToken, scopeList } from '../../auth/tokens.ts';
import { badRequest, notFound } from '../../problem.ts';
import type { AppEnv, GatewayDeps } from '../context.ts';
import { requireScope } from '../middleware/auth.ts';
import { jsonBody } from '../validate.ts';

const createBody = z.strictObject({
  name: z.string().min(1).max(100),
  scopes: scopeList,
  expires: z.string().max(64).optional(),
});

/** Token administration within the caller's own tenant. */
export function tokenRoutes(deps: GatewayDeps) {
  return new Hono<AppEnv>()
    .use(requireScope(deps.db, 'admin'))
    .get('/', async (c) => c.json({ tokens: await listTokens(deps.db, c.get('principal').tenantId) }))
    .post('/', async (c) => {
      const body = await jsonBody(c, createBody);
      let expiresAt: number | null = null;
      if (body.expires) {
        try {
          expiresAt = parseExpiry(body.expires);
        } catch (error) {
          throw badRequest('invalid-expiry', (error as Error).message);
        }
      }
      const token = await issueToken(deps.db, {
        tenantId: c.get('principal').tenantId,
        name: body.name,
        scopes: body.scopes,
        expiresAt,
      });
      return c.json(token, 201);
    })
    .delete('/:id', async (c) => {
      const ok = await revokeToken(deps.db, c.req.param('id'), c.get('principal').tenantId);
      if (!ok) throw notFound(`token ${c.req.param('id')}`);
      return c.body(null, 204);
    });
}
