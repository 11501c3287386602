import { z } from 'zod';
import { CliError, EXIT } from './errors.ts';

export const clientOptions = z.object({
  url: z.url({ protocol: /^https?$/ }),
  token: z.string().min(1).optional(),
});
export type ClientOptions = z.output<typeof clientOptions>;

function exitFor(status: number): number {
  if (status === 401 || status === 403) return EXIT.auth;
  if (status === 404) return EXIT.notFound;
  if (status === 409) return EXIT.conflict;
  if (status === 400 || status === 413 || status === 415 || status === 422) return EXIT.usage;
  return EXIT.failed;
}

/** Calls the gateway, turning problem documents and connection failures into CLI errors. */
export async function callGateway(
  opts: ClientOptions,
  method: string,
  path: string,
  init: { body?: BodyInit; headers?: Record<string, string>; expectJson?: boolean } = {},
): Promise<{ status: number; body: unknown; headers: Headers }> {
  const headers: Record<string, string> = { ...init.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  let response: Response;
  try {
    response = await fetch(new URL(path, opts.url), {
      method,
      headers,
      body: init.body,
      ...(init.body instanceof ReadableStream ? { duplex: 'half' } : {}),
    } as RequestInit);
  } catch (error) {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    throw new CliError(
      `cannot reach the gateway at ${opts.url}: ${cause?.code ?? cause?.message ?? (error as Error).message}`,
      EXIT.unreachable,
    );
  }
  const text = await response.text();
  let body: unknown = text;
  if ((response.headers.get('content-type') ?? '').includes('json') && text) body = JSON.parse(text);
  if (!response.ok) {
    const problem = body as { title?: string; detail?: string };
    const detail = typeof body === 'object' && body ? (problem.detail ?? problem.title) : text;
    throw new CliError(`${method} ${path} failed (${response.status}): ${detail}`, exitFor(response.status));
  }
  return { status: response.status, body, headers: response.headers };
}
