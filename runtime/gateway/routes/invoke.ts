import { gzipSync } from 'node:zlib';
import type { Context } from 'hono';
import { exportInvocation } from '../../evidence/export.ts';
import { Hono } from 'hono';
import { customRoutes } from '../../../db/queries/invocations.ts';
import { authenticate, hasScope } from '../../auth/tokens.ts';
import { invokeInstance } from '../../lifecycle/invoke.ts';
import { notFound, Problem } from '../../problem.ts';
import { findFunction, versionById } from '../../../db/queries/functions.ts';
import { parseManifest, type Manifest } from '../../manifest/index.ts';
import type { AppEnv, GatewayDeps } from '../context.ts';
import { problemResponse } from '../middleware/problem.ts';
import { readBoundedBody } from '../validate.ts';

const MiB = 1024 * 1024;
export const MAX_INVOKE_BODY_BYTES = 8 * MiB;
const ROUTE_CACHE_MS = 1_000;
const MANIFEST_CACHE_ENTRIES = 1_000;

function routeMatcher(pattern: string): RegExp {
  const escaped = pattern
    .split('/')
    .map((part) =>
      part === '*' ? '.*' : part.startsWith(':') ? '[^/]+' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'),
    )
    .join('/');
  return new RegExp(`^${escaped}(/.*)?$`);
}

/**
 * Headers that describe the connection or the message framing, which the gateway owns: an anchor's
 * `content-length: 5` on an empty body would otherwise cut the client's connection.
 */
const HOP_BY_HOP = new Set([
  'connection',
  'content-length',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Evidence small enough rides in the response itself, for callers that cannot make a second request. */
export const MAX_EMBEDDED_EVIDENCE_BYTES = 64 * 1024;

async function embeddedEvidence(
  deps: GatewayDeps,
  invocationId: string,
  tenantId: string,
): Promise<Record<string, string>> {
  const bundle = await exportInvocation(deps.db, invocationId, tenantId, deps.keyring).catch(() => undefined);
  if (!bundle) return { 'x-ebcc-evidence-embedded': 'unavailable' };
  const packed = gzipSync(JSON.stringify(bundle)).toString('base64url');
  if (packed.length > MAX_EMBEDDED_EVIDENCE_BYTES) return { 'x-ebcc-evidence-embedded': 'too-large' };
  return { 'x-ebcc-evidence-embedded': 'gzip+base64url', 'x-ebcc-evidence-bundle': packed };
}

/** Invocation over HTTP: `/fn/:name/*`, plus the custom routes that active versions declare. */
export function invokeRoutes(deps: GatewayDeps) {
  let routes: { name: string; match: RegExp }[] = [];
  let routesAt = 0;
  const lookupRoute = async (path: string): Promise<string | undefined> => {
    if (Date.now() - routesAt > ROUTE_CACHE_MS) {
      routes = (await customRoutes(deps.db)).map((r) => ({ name: r.name, match: routeMatcher(r.route) }));
      routesAt = Date.now();
    }
    return routes.find((r) => r.match.test(path))?.name;
  };

  // Versions are immutable, so a version's parsed manifest can be kept for as long as it is wanted.
  const manifests = new Map<string, Manifest>();
  const manifestOf = async (versionId: string): Promise<Manifest> => {
    let manifest = manifests.get(versionId);
    if (!manifest) {
      const row = await versionById(deps.db, versionId);
      if (!row) throw notFound('the active version');
      manifest = parseManifest(row.manifest);
      if (manifests.size >= MANIFEST_CACHE_ENTRIES) manifests.delete(manifests.keys().next().value!);
      manifests.set(versionId, manifest);
    }
    return manifest;
  };

  const invoke = async (c: Context<AppEnv>, name: string): Promise<Response> => {
    const fn = await findFunction(deps.db, name);
    if (!fn?.activeVersionId) throw notFound(`function "${name}"`);
    const manifest = await manifestOf(fn.activeVersionId);
    const headers = [...c.req.raw.headers].filter(([k]) => k !== 'authorization');
    if (!manifest.triggers.http.public) {
      const header = c.req.header('authorization');
      const bearer = header && /^Bearer\s+(\S+)$/i.exec(header)?.[1];
      const principal = bearer ? await authenticate(deps.db, bearer) : 'malformed';
      if (typeof principal === 'string') {
        throw new Problem(
          401,
          'unauthorized',
          'Unauthorized',
          `function "${name}" is not public: send an API token with the "invoke" scope`,
        );
      }
      if (principal.tenantId !== fn.tenantId) throw notFound(`function "${name}"`);
      if (!hasScope(principal, 'invoke')) {
        throw new Problem(
          403,
          'insufficient-scope',
          'Forbidden',
          'invoking needs a token with the "invoke" scope',
          { requiredScope: 'invoke' },
        );
      }
    }
    const body = await readBoundedBody(c.req.raw, MAX_INVOKE_BODY_BYTES);
    const lease = await deps.pool.acquire(fn.tenantId, fn.name, fn.activeVersionId, manifest.pool, fn.id);
    try {
      const result = await invokeInstance(
        deps.committer,
        lease.instance,
        { method: c.req.method, url: c.req.url, headers, body },
        { trigger: 'http', start: lease.start, acquireMs: lease.acquireMs },
      );
      const trace: Record<string, string> = {
        'x-ebcc-invocation': result.invocationId,
        'x-ebcc-cid': lease.instance.cid,
        'x-ebcc-start': lease.start,
        'x-ebcc-eids': result.executions.map((x) => `${x.stage}=${x.eid}`).join(', '),
      };
      if (result.executions.length) {
        trace['x-ebcc-evidence'] = `/v1/invocations/${result.invocationId}/evidence`;
        if (c.req.header('x-ebcc-evidence') === 'embed')
          Object.assign(trace, await embeddedEvidence(deps, result.invocationId, fn.tenantId));
      }
      if (result.problem) {
        const response = problemResponse(c, result.problem);
        for (const [k, v] of Object.entries(trace)) response.headers.set(k, v);
        return response;
      }
      const response = new Response(
        result.status === 204 || result.status === 304 ? null : new Uint8Array(result.body),
        {
          status: result.status,
          headers: result.headers.filter(([k]) => !HOP_BY_HOP.has(k.toLowerCase())),
        },
      );
      for (const [k, v] of Object.entries(trace)) response.headers.set(k, v);
      return response;
    } finally {
      await lease.release();
    }
  };

  return {
    fn: new Hono<AppEnv>()
      .all('/:name/*', (c) => invoke(c, c.req.param('name')))
      .all('/:name', (c) => invoke(c, c.req.param('name'))),
    custom: async (c: Context<AppEnv>, next: () => Promise<void>) => {
      const name = await lookupRoute(c.req.path);
      if (!name) return next();
      return invoke(c, name);
    },
  };
}
