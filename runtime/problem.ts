import type { ContentfulStatusCode } from 'hono/utils/http-status';

/** An RFC 9457 problem, thrown anywhere and rendered by the gateway's error handler. */
export class Problem extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    readonly slug: string,
    readonly title: string,
    readonly detail?: string,
    readonly extensions: Record<string, unknown> = {},
  ) {
    super(detail ?? title);
    this.name = 'Problem';
  }

  toJSON(instance?: string): Record<string, unknown> {
    return {
      type: `urn:ebcc:problem:${this.slug}`,
      title: this.title,
      status: this.status,
      ...(this.detail ? { detail: this.detail } : {}),
      ...(instance ? { instance } : {}),
      ...this.extensions,
    };
  }
}

export const badRequest = (slug: string, detail: string, extensions?: Record<string, unknown>) =>
  new Problem(400, slug, 'Bad request', detail, extensions);
export const notFound = (what: string) =>
  new Problem(404, 'not-found', 'Not found', `${what} does not exist`);
export const conflict = (slug: string, detail: string) => new Problem(409, slug, 'Conflict', detail);
export const unprocessable = (slug: string, detail: string, extensions?: Record<string, unknown>) =>
  new Problem(422, slug, 'Unprocessable content', detail, extensions);
