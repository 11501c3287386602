import { Hono } from 'hono';
import { z } from 'zod';
import { functionName, versionString } from '../../manifest/index.ts';
import type { AppEnv, GatewayDeps } from '../context.ts';
import { requireScope } from '../middleware/auth.ts';
import { jsonBody, parseWith } from '../validate.ts';

const createBody = z.strictObject({
  function: functionName,
  version: versionString.optional(),
  annotations: z.record(z.string().regex(/^[A-Za-z0-9._/-]{1,128}$/), z.string().max(1024)).optional(),
});
const killBody = z.strictObject({
  signal: z
    .string()
    .regex(/^(SIG)?[A-Z0-9]{2,10}$/)
    .default('SIGTERM'),
});
const deleteQuery = z.strictObject({ force: z.enum(['true', 'false', '1', '0']).optional() });
const waitQuery = z.strictObject({ timeout: z.coerce.number().int().min(0).max(300_000).default(30_000) });

/** The OCI-style lifecycle over HTTP: create, start, state, kill, delete, wait, and ps. */
export function instanceRoutes(deps: GatewayDeps) {
  const { manager, db } = deps;
  return new Hono<AppEnv>()
    .use(requireScope(db, 'deploy'))
    .get('/', async (c) => c.json({ instances: await manager.list(c.get('principal').tenantId) }))
    .post('/', async (c) => {
      const body = await jsonBody(c, createBody);
      const tenantId = c.get('principal').tenantId;
      const instance = await manager.create({
        tenantId,
        functionName: body.function,
        version: body.version,
        annotations: body.annotations,
      });
      c.header('Location', `/v1/instances/${instance.cid}`);
      return c.json(await manager.state(instance.cid, tenantId), 201);
    })
    .get('/:cid', async (c) => c.json(await manager.state(c.req.param('cid'), c.get('principal').tenantId)))
    .post('/:cid/start', async (c) => {
      const tenantId = c.get('principal').tenantId;
      await manager.start(c.req.param('cid'), tenantId);
      return c.json(await manager.state(c.req.param('cid'), tenantId));
    })
    .post('/:cid/kill', async (c) => {
      const tenantId = c.get('principal').tenantId;
      const body = await jsonBody(c, killBody, { optional: true });
      await manager.kill(c.req.param('cid'), tenantId, body.signal);
      return c.json(await manager.state(c.req.param('cid'), tenantId), 202);
    })
    .get('/:cid/wait', async (c) => {
      const query = parseWith(waitQuery, c.req.query());
      return c.json(await manager.wait(c.req.param('cid'), c.get('principal').tenantId, query.timeout));
    })
    .delete('/:cid', async (c) => {
      const query = parseWith(deleteQuery, c.req.query());
      await manager.delete(
        c.req.param('cid'),
        c.get('principal').tenantId,
        query.force === 'true' || query.force === '1',
      );
      return c.body(null, 204);
    });
}
