import { Hono } from 'hono';
import type { AppEnv, GatewayDeps } from '../context.ts';
import { requireScope } from '../middleware/auth.ts';

/**
 * `GET /metrics`: this node's pool metrics per function in the Prometheus text format. Operator data
 * (it covers every tenant's functions on the node), so it takes an "admin" token; Prometheus sends it
 * with `authorization: { credentials: <token> }`.
 */
export function metricsRoutes(deps: GatewayDeps) {
  return new Hono<AppEnv>().get('/metrics', requireScope(deps.db, 'admin'), async (c) => {
    const { contentType, body } = await deps.node.metrics.render();
    return c.body(body, 200, { 'content-type': contentType });
  });
}
