import type { Context } from 'hono';
import type { z } from 'zod';
import { formatPath } from '../manifest/index.ts';
import { badRequest, Problem } from '../problem.ts';

/** API bodies are small documents; anything bigger is refused before it is buffered. */
export const MAX_JSON_BODY_BYTES = 1024 * 1024;

/** Reads a request body, refusing (413) one over `max` bytes as soon as it is known to be. */
export async function readBoundedBody(request: Request, max: number): Promise<Uint8Array> {
  const declared = Number(request.headers.get('content-length') ?? NaN);
  const tooLarge = () =>
    new Problem(413, 'request-too-large', 'Content too large', `the request body exceeds ${max} bytes`);
  if (Number.isFinite(declared) && declared > max) throw tooLarge();
  if (!request.body) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of request.body as unknown as AsyncIterable<Uint8Array>) {
    size += chunk.byteLength;
    if (size > max) throw tooLarge();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Parses a JSON request body with a zod schema, answering 400/413/415 with the offending fields named. */
export async function jsonBody<T extends z.ZodType>(
  c: Context,
  schema: T,
  { optional = false, maxBytes = MAX_JSON_BODY_BYTES } = {},
): Promise<z.output<T>> {
  const type = c.req.header('content-type') ?? '';
  const bytes = await readBoundedBody(c.req.raw, maxBytes);
  let text: string;
  try {
    text = strictUtf8.decode(bytes);
  } catch {
    throw badRequest('invalid-encoding', 'the body is not valid UTF-8');
  }
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
