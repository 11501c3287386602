import { z } from 'zod';

export type RequestValidator = (request: Uint8Array) => string | null;

/** Compiles a stage's JSON Schema into a check that returns the first problem, or null. */
export function compileRequestSchema(
  schema: Record<string, unknown> | null | undefined,
): RequestValidator | null {
  if (!schema) return null;
  const validator = z.fromJSONSchema(schema as Parameters<typeof z.fromJSONSchema>[0]);
  const decoder = new TextDecoder('utf-8', { fatal: true });
  return (request) => {
    let value: unknown;
    try {
      value = JSON.parse(decoder.decode(request));
    } catch {
      return 'the request is not valid UTF-8 JSON, and this stage declares a request schema';
    }
    const result = validator.safeParse(value);
    if (result.success) return null;
    return result.error.issues
      .slice(0, 5)
      .map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`)
      .join('; ');
  };
}
