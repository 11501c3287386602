import { join } from 'node:path';
import { Hono } from 'hono';
import { z } from 'zod';
import { listFunctions } from '../../../db/queries/functions.ts';
import { deployBundle } from '../../registry/deploy.ts';
import { deleteFunction, describeFunction, ownedFunction, rollback } from '../../registry/functions.ts';
import { versionString } from '../../manifest/index.ts';
import type { AppEnv, GatewayDeps } from '../context.ts';
import { requireScope } from '../middleware/auth.ts';
import { receiveBundle } from '../upload.ts';
import { jsonBody, parseWith } from '../validate.ts';

const rollbackBody = z.strictObject({ version: versionString.optional() });
const deleteQuery = z.strictObject({
  force: z.enum(['true', 'false', '1', '0']).optional(),
  /** How long in-flight invocations may take to finish before their instances are deleted anyway. */
  grace: z.coerce.number().int().min(0).max(120_000).optional(),
});

export function functionRoutes(deps: GatewayDeps) {
  const { db, config } = deps;
  return new Hono<AppEnv>()
    .post('/', requireScope(db, 'deploy'), async (c) => {
      const upload = await receiveBundle(c.req.raw, join(config.home, 'tmp'), config.maxBundleBytes);
      try {
        const result = await deployBundle({
          db,
          home: config.home,
          tenantId: c.get('principal').tenantId,
          archivePath: upload.path,
          bundleDigest: `sha256:${upload.sha256}`,
        });
        deps.logger.info(
          {
            requestId: c.get('requestId'),
            fn: result.function,
            version: result.version,
            created: result.created,
          },
          'deploy',
        );
        // Every pool node drains the old version's pool and pre-warms the new one, off this request.
        if (result.created) void deps.node.announce(`deployed ${result.function}@${result.version}`);
        const { created, ...body } = result;
        c.header('Location', `/v1/functions/${result.function}`);
        return c.json({ ...body, active: true }, created ? 201 : 200);
      } finally {
        await upload.discard();
      }
    })
    .get('/', requireScope(db, 'any'), async (c) =>
      c.json({ functions: await listFunctions(db, c.get('principal').tenantId) }),
    )
    .get('/:name', requireScope(db, 'any'), async (c) => {
      const fn = await ownedFunction(db, c.get('principal').tenantId, c.req.param('name'));
      return c.json(await describeFunction(db, fn));
    })
    .post('/:name/rollback', requireScope(db, 'deploy'), async (c) => {
      const fn = await ownedFunction(db, c.get('principal').tenantId, c.req.param('name'));
      const body = await jsonBody(c, rollbackBody, { optional: true });
      const result = await rollback(db, fn, body.version);
      void deps.node.announce(`rolled back ${fn.name} to ${result.activeVersion}`);
      return c.json(result);
    })
    .delete('/:name', requireScope(db, 'deploy'), async (c) => {
      const query = parseWith(deleteQuery, c.req.query());
      const fn = await ownedFunction(db, c.get('principal').tenantId, c.req.param('name'));
      // This node drains its instances of the function (no new leases; in-flight invocations finish
      // until the grace period ends); the other nodes' upkeep drains theirs once the function is gone.
      await deleteFunction(db, fn, query.force === 'true' || query.force === '1', {
        operatorInstances: (functionId) => deps.pool.operatorInstances(functionId).length,
        drain: (row) => deps.pool.drainFunction(row, query.grace ?? 10_000),
      });
      void deps.node.announce(`deleted ${fn.name}`);
      return c.body(null, 204);
    });
}
