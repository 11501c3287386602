import { z } from 'zod';

/**
 * What an anchor process may say to the host over fd 3. The anchor runs tenant code, which can write
 * to that fd itself, so every frame header is validated here before the host acts on any field of it:
 * a frame that does not fit is a corrupt stream, and the host ends the anchor.
 */
const id = z.number().int().nonnegative();
const callId = z.union([z.number(), z.string()]);
const invocation = id.nullable().optional();
/** An HTTP field name (RFC 9110 token) and a value without CR, LF or NUL, as `Headers` accepts them. */
const headerPair = z.tuple([
  z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/),
  z.string().regex(/^[^\r\n\0]*$/),
]);

export const guestFrameSchema = z.discriminatedUnion('t', [
  z.object({ t: z.literal('ready') }),
  z.object({ t: z.literal('load-error'), message: z.string().optional() }),
  z.object({ t: z.literal('console'), invocation, level: z.string().max(16), text: z.string() }),
  z.object({
    t: z.literal('response'),
    id,
    // What the WHATWG Response constructor accepts.
    status: z.number().int().min(200).max(599),
    statusText: z
      .string()
      .regex(/^[\t\x20-\x7e\x80-\xff]*$/)
      .optional(),
    headers: z.array(headerPair),
  }),
  z.object({ t: z.literal('error'), id, message: z.string() }),
  z.object({ t: z.literal('done'), id, waitUntilErrors: z.array(z.string()) }),
  z.object({
    t: z.literal('stage'),
    callId,
    invocation,
    stage: z.string(),
    nonce: z.string().optional(),
  }),
  z.object({
    t: z.literal('net'),
    callId,
    invocation,
    url: z.string(),
    method: z.string(),
    headers: z.array(z.tuple([z.string(), z.string()])).optional(),
  }),
]);

export type GuestFrame = z.infer<typeof guestFrameSchema>;

/** The frame header as a typed message, or a description of why it is not one. */
export function parseGuestFrame(
  header: unknown,
): { ok: true; frame: GuestFrame } | { ok: false; error: string } {
  const result = guestFrameSchema.safeParse(header);
  if (result.success) return { ok: true, frame: result.data };
  const t = typeof header === 'object' && header && 't' in header ? String(header.t).slice(0, 32) : '?';
  return { ok: false, error: `malformed "${t}" frame: ${result.error.issues[0]?.message ?? 'invalid'}` };
}
