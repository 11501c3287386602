import { Hono } from 'hono';
import { requestId } from 'hono/request-id';
import type { AppEnv, GatewayDeps } from './context.ts';
import { problemHandlers } from './middleware/problem.ts';
import { batchRoutes, batchSubmitRoutes } from './routes/batches.ts';
import { functionRoutes } from './routes/functions.ts';
import { healthRoutes } from './routes/health.ts';
import { instanceRoutes } from './routes/instances.ts';
import { invocationRoutes } from './routes/invocations.ts';
import { invokeRoutes } from './routes/invoke.ts';
import { metricsRoutes } from './routes/metrics.ts';
import { tenantRoutes } from './routes/tenants.ts';
import { stageKeyRoutes } from './routes/stage-keys.ts';
import { keyReleaseRoutes } from './routes/key-release.ts';
import { tokenRoutes } from './routes/tokens.ts';

/** The gateway: one Hono app composed from route modules. */
export function createApp(deps: GatewayDeps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const { onError, notFound } = problemHandlers(deps.logger);
  app.use(requestId({ headerName: 'X-Request-Id' }));
  app.use(async (c, next) => {
    const started = performance.now();
    await next();
    deps.logger.info(
      {
        requestId: c.get('requestId'),
        method: c.req.method,
        path: c.req.path,
        status: c.res.status,
        ms: +(performance.now() - started).toFixed(2),
      },
      'request',
    );
  });
  app.route('/', healthRoutes(deps));
  app.route('/', metricsRoutes(deps));
  app.route('/v1/functions', functionRoutes(deps));
  app.route('/v1/functions', batchSubmitRoutes(deps));
  app.route('/v1/batches', batchRoutes(deps));
  app.route('/v1/functions', stageKeyRoutes(deps));
  app.route('/v1', keyReleaseRoutes(deps));
  app.route('/v1/tokens', tokenRoutes(deps));
  app.route('/v1/tenants', tenantRoutes(deps));
  app.route('/v1/instances', instanceRoutes(deps));
  app.route('/v1/invocations', invocationRoutes(deps));
  const invoke = invokeRoutes(deps);
  app.route('/fn', invoke.fn);
  app.use(invoke.custom);
  app.onError(onError);
  app.notFound(notFound);
  return app;
}
