import { Hono } from 'hono';
import type { AppEnv, GatewayDeps } from '../context.ts';
import { Problem } from '../../problem.ts';

async function check(name: string, probe: () => Promise<unknown>, timeoutMs = 2000) {
  const started = performance.now();
  try {
    await Promise.race([
      probe(),
      new Promise((_, reject) => setTimeout(() => reject(new Error('timed out')), timeoutMs)),
    ]);
    return { name, ok: true, ms: Math.round(performance.now() - started) };
  } catch (error) {
    return { name, ok: false, error: (error as Error).message };
  }
}

export function healthRoutes(deps: GatewayDeps) {
  return new Hono<AppEnv>()
    .get('/healthz', (c) => c.json({ status: 'ok' }))
    .get('/readyz', async (c) => {
      const checks = await Promise.all([
        check('database', () => deps.database.client.execute('select 1')),
        check('redis', () => deps.redis.ping()),
      ]);
      if (checks.every((x) => x.ok)) return c.json({ status: 'ready', checks });
      throw new Problem(
        503,
        'not-ready',
        'Service unavailable',
        `not ready: ${checks
          .filter((x) => !x.ok)
          .map((x) => x.name)
          .join(', ')}`,
        {
          checks,
        },
      );
    });
}
