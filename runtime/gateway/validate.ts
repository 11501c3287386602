import type { Context } from 'hono';
import type { z } from 'zod';
import { formatPath } from '../manifest/index.ts';
import { badRequest, Problem } from '../problem.ts';

/** Parses a JSON request body with a zod schema, answering 400/415 with the offending fields named. */
export async function jsonBody<T extends z.ZodType>(
  c: Context,
  schema: T,
  { optional = false } = {},
): Promise<z.output<T>> {
  const type = c.req.header('content-type') ?? '';
  const text = await c.req.text();
  if (!text && optional) return parseWith(schema, {});
  if (!/^application\/([a-z.+-]*\+)?json\b/i.test(type)) {
    throw new Problem(
      415,
      'unsupported-media-type',
      'Unsupported media type',
      'send the body as application/json',
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw badRequest('invalid-json', `the body is not valid JSON: ${(error as Error).message}`);
  }
  return parseWith(schema, value);
}

export function parseWith<T extends z.ZodType>(schema: T, value: unknown): z.output<T> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issues = result.error.issues.map((i) => ({
    path: formatPath(i.path) || '(root)',
    message: i.message,
  }));
  throw badRequest('invalid-request', issues.map((i) => `${i.path}: ${i.message}`).join('; '), { issues });
}
