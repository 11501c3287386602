import type { Context, ErrorHandler, NotFoundHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { Logger } from '../../log.ts';
import { Problem } from '../../problem.ts';
import type { AppEnv } from '../context.ts';

export function problemResponse(c: Context, problem: Problem): Response {
  const body = problem.toJSON(c.req.path);
  const requestId = c.get('requestId' as never) as string | undefined;
  if (requestId) body.requestId = requestId;
  const headers: Record<string, string> = { 'content-type': 'application/problem+json' };
  // A refused request may have left part of its body on the wire; the connection cannot be reused.
  if (c.req.raw.body) headers.connection = 'close';
  if (typeof problem.extensions.retryAfter === 'number')
    headers['retry-after'] = String(problem.extensions.retryAfter);
  return c.body(JSON.stringify(body), problem.status, headers);
}

export function problemHandlers(logger: Logger): {
  onError: ErrorHandler<AppEnv>;
  notFound: NotFoundHandler<AppEnv>;
} {
  return {
    onError: (error, c) => {
      if (error instanceof Problem) return problemResponse(c, error);
      if (error instanceof HTTPException) {
        return problemResponse(
          c,
          new Problem(error.status as ContentfulStatusCode, 'http-error', error.message || 'HTTP error'),
        );
      }
      logger.error({ err: error, requestId: c.get('requestId'), path: c.req.path }, 'unhandled error');
      return problemResponse(
        c,
        new Problem(
          500,
          'internal',
          'Internal server error',
          'the gateway failed; see its log for the request id',
        ),
      );
    },
    notFound: (c) =>
      problemResponse(
        c,
        new Problem(404, 'not-found', 'Not found', `no route for ${c.req.method} ${c.req.path}`),
      ),
  };
}
