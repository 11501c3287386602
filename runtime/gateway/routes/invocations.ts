import { Hono } from 'hono';
import { invocationWithExecutions } from '../../../db/queries/invocations.ts';
import { openArtifacts } from '../../artifacts/open.ts';
import { ArtifactSealError } from '../../artifacts/sealing.ts';
import { exportInvocation, ExportError } from '../../evidence/export.ts';
import { DataKeyShreddedError } from '../../keys/data-keys.ts';
import { notFound, Problem } from '../../problem.ts';
import type { AppEnv, GatewayDeps } from '../context.ts';
import { requireScope } from '../middleware/auth.ts';

const artifact = (
  digest: string | null,
  bytes: Buffer | null,
  inline: Buffer | null,
  blob: string | null,
  sealed: boolean,
) => ({
  digest,
  size: bytes?.length ?? null,
  storage: inline ? 'inline' : blob ? 'blob' : 'none',
  /** Stored encrypted with the tenant's data key (and decrypted here for the tenant). */
  sealed,
  base64: bytes?.toString('base64') ?? null,
});

/** 410 Gone: the tenant's data key was shredded, so these artifacts can never be read again. */
export function shreddedProblem(error: DataKeyShreddedError, what: string): Problem {
  return new Problem(
    410,
    'data-key-shredded',
    'Gone',
    `the artifacts of ${what} were sealed with data key ${error.keyId}, which was shredded at ${new Date(error.shreddedAt).toISOString()}; they cannot be read. Their evidence still verifies over digests: GET /v1/invocations/:id/evidence`,
    { dataKey: error.keyId, shreddedAt: error.shreddedAt },
  );
}

export function invocationRoutes(deps: GatewayDeps) {
  return new Hono<AppEnv>()
    .get('/:id/evidence', requireScope(deps.db, 'any'), async (c) => {
      await deps.committer.flush();
      let bundle;
      try {
        bundle = await exportInvocation(
          deps.db,
          c.req.param('id'),
          c.get('principal').tenantId,
          deps.keyring,
        );
      } catch (error) {
        if (error instanceof ExportError) throw new Problem(409, 'no-evidence', 'Conflict', error.message);
        throw error;
      }
      if (!bundle) throw notFound(`invocation ${c.req.param('id')}`);
      return c.json(bundle);
    })
    .get('/:id', requireScope(deps.db, 'any'), async (c) => {
      await deps.committer.flush();
      const found = await invocationWithExecutions(deps.db, c.req.param('id'));
      if (!found || found.invocation.tenantId !== c.get('principal').tenantId)
        throw notFound(`invocation ${c.req.param('id')}`);
      const { invocation } = found;
      let opened;
      try {
        opened = await openArtifacts(deps.db, deps.keyring, invocation.tenantId, found.executions);
      } catch (error) {
        if (error instanceof DataKeyShreddedError)
          throw shreddedProblem(error, `invocation ${invocation.id}`);
        if (error instanceof ArtifactSealError)
          throw new Problem(
            409,
            'artifact-integrity',
            'Conflict',
            `${error.message}: the stored ciphertext was altered or moved; its evidence shows which digest it should have`,
          );
        throw error;
      }
      return c.json({
        id: invocation.id,
        function: found.functionName,
        version: found.version,
        cid: invocation.cid,
        trigger: invocation.trigger,
        start: invocation.start,
        status: invocation.status,
        httpStatus: invocation.httpStatus,
        error: invocation.error,
        console: invocation.console,
        timings: invocation.timings,
        startedAt: invocation.startedAt,
        finishedAt: invocation.finishedAt,
        executions: found.executions.map((x) => {
          const a = opened.get(x.id)!;
          const sealed = new Set<string>(a.sealed);
          return {
            id: x.id,
            stage: x.stage,
            backend: x.backend,
            eid: x.eid,
            seq: x.seq,
            measurement: x.measurement,
            exit: { reason: x.exitReason, code: x.exitCode },
            request: artifact(
              x.requestDigest,
              a.request,
              x.requestInline,
              x.requestBlob,
              sealed.has('request'),
            ),
            response: artifact(
              x.responseDigest,
              a.response,
              x.responseInline,
              x.responseBlob,
              sealed.has('response'),
            ),
            log: { digest: x.logDigest, sealed: sealed.has('log'), text: a.log?.toString('utf8') ?? '' },
            metadata: x.metadata,
            evidence: x.evidence ? x.evidence.toString('base64') : null,
            createdAt: x.createdAt,
          };
        }),
      });
    });
}
