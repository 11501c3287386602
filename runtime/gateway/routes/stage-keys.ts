import { Hono } from 'hono';
import { versionById } from '../../../db/queries/functions.ts';
import { parseManifest } from '../../manifest/index.ts';
import { conflict, notFound, Problem } from '../../problem.ts';
import { ownedFunction } from '../../registry/functions.ts';
import { enclaveKeyDocument } from '../../seal/key-document.ts';
import { StageError } from '../../stages/dispatcher.ts';
import type { AppEnv, GatewayDeps } from '../context.ts';
import { requireScope } from '../middleware/auth.ts';

/**
 * `GET /v1/functions/:name/stages/:stage/key`: the encryption key of the stage's current enclave (in a
 * warm instance, started if need be) with the native evidence binding it. The gateway only relays it:
 * the key was made inside the enclave and the evidence was signed by the backend's root, so a client
 * verifies it (runtime/client) rather than trusting this answer.
 */
export function stageKeyRoutes(deps: GatewayDeps) {
  const { db } = deps;
  return new Hono<AppEnv>().get('/:name/stages/:stage/key', requireScope(db, 'invoke'), async (c) => {
    const fn = await ownedFunction(db, c.get('principal').tenantId, c.req.param('name'));
    if (!fn.activeVersionId)
      throw conflict('no-active-version', `function "${fn.name}" has no active version`);
    const version = await versionById(db, fn.activeVersionId);
    if (!version) throw notFound('the active version');
    const manifest = parseManifest(version.manifest);
    const stageName = c.req.param('stage');
    const stage = manifest.stages.find((s) => s.name === stageName);
    if (!stage) throw notFound(`stage "${stageName}" of function "${fn.name}"`);
    const lease = await deps.pool.acquire(fn.tenantId, fn.name, fn.activeVersionId, manifest.pool);
    try {
      const key = await lease.instance.stages.enclaveKey(stageName);
      return c.json(
        enclaveKeyDocument(
          { name: fn.name, version: version.version, versionDigest: version.versionDigest },
          key,
          stage.sealing,
        ),
      );
    } catch (error) {
      if (error instanceof StageError) {
        const slug = error.status === 409 ? 'stage-not-sealable' : error.code;
        const status = error.status as ConstructorParameters<typeof Problem>[0];
        throw new Problem(
          status,
          slug,
          error.status === 409 ? 'Conflict' : 'Stage key unavailable',
          error.message,
        );
      }
      throw error;
    } finally {
      lease.release();
    }
  });
}
