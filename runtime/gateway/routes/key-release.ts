import { Hono } from 'hono';
import { notFound, Problem } from '../../problem.ts';
import { ownedFunction } from '../../registry/functions.ts';
import { KeyReleaseService } from '../../keyrelease/service.ts';
import type { AppEnv, GatewayDeps } from '../context.ts';
import { requireScope } from '../middleware/auth.ts';

const MAX_SECRET_ENVELOPE_BYTES = 64 * 1024;

/**
 * Key release (docs/security.md): the key broker's attested key; a tenant's sealed secret for one of its
 * functions (PUT, the body a sealed envelope showing its policy); the log of release decisions.
 */
export function keyReleaseRoutes(deps: GatewayDeps) {
  const { db } = deps;
  const service = new KeyReleaseService(db);
  return new Hono<AppEnv>()
    .get('/key-release/key', requireScope(db, 'any'), async (c) => c.json(await service.brokerKey()))
    .put('/functions/:name/secrets/:secret', requireScope(db, 'deploy'), async (c) => {
      const fn = await ownedFunction(db, c.get('principal').tenantId, c.req.param('name'));
      const body = new Uint8Array(await c.req.arrayBuffer());
      if (body.byteLength > MAX_SECRET_ENVELOPE_BYTES)
        throw new Problem(
          413,
          'request-too-large',
          'Content too large',
          `a sealed secret is at most ${MAX_SECRET_ENVELOPE_BYTES} bytes`,
        );
      const stored = await service.upload(fn.tenantId, fn.id, c.req.param('secret'), body);
      return c.json(stored, 201);
    })
    .get('/functions/:name/secrets/:secret/releases', requireScope(db, 'any'), async (c) => {
      const fn = await ownedFunction(db, c.get('principal').tenantId, c.req.param('name'));
      const releases = await service.releases(fn.id, c.req.param('secret'));
      if (!releases) throw notFound(`secret "${c.req.param('secret')}" of function "${fn.name}"`);
      return c.json({ releases });
    });
}
