import { z } from 'zod';
import { badRequest, Problem } from '../problem.ts';

const MiB = 1024 * 1024;

export const BATCH_LIMITS = {
  /** The whole request body, JSON array or NDJSON. */
  maxBodyBytes: 64 * MiB,
  maxItems: 100_000,
  /** One item as JSON text: what one invocation's request body may be. */
  maxItemBytes: 1 * MiB,
};

export interface ParsedItem {
  /** The item as JSON text, or null when it was refused. */
  input: string | null;
  /** Why the item was refused (it is recorded as failed and never runs). */
  refused?: string;
}

const tooLarge = () =>
  new Problem(
    413,
    'batch-too-large',
    'Content too large',
    `the batch body exceeds ${BATCH_LIMITS.maxBodyBytes} bytes; split it into several batches`,
    { maxBodyBytes: BATCH_LIMITS.maxBodyBytes },
  );

const tooMany = () =>
  new Problem(
    413,
    'batch-too-many-items',
    'Content too large',
    `a batch holds at most ${BATCH_LIMITS.maxItems} items; split it into several batches`,
    { maxItems: BATCH_LIMITS.maxItems },
  );

const itemTooLarge = (bytes: number) =>
  `item-too-large: the item is ${bytes} bytes as JSON, over the limit of ${BATCH_LIMITS.maxItemBytes}`;

async function* chunksOf(request: Request): AsyncGenerator<Uint8Array> {
  const declared = Number(request.headers.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > BATCH_LIMITS.maxBodyBytes) throw tooLarge();
  if (!request.body) return;
  let size = 0;
  for await (const chunk of request.body as unknown as AsyncIterable<Uint8Array>) {
    size += chunk.byteLength;
    if (size > BATCH_LIMITS.maxBodyBytes) throw tooLarge();
    yield chunk;
  }
}

const itemArray = z.array(z.unknown()).min(1, 'a batch needs at least one item');

function fromValue(value: unknown): ParsedItem {
  if (value === undefined) return { input: null, refused: 'invalid-item: the item is not a JSON value' };
  const input = JSON.stringify(value);
  const bytes = Buffer.byteLength(input);
  return bytes > BATCH_LIMITS.maxItemBytes ? { input: null, refused: itemTooLarge(bytes) } : { input };
}

/** A JSON array of items, or `{ "items": [...] }`. */
async function parseJsonBody(request: Request): Promise<ParsedItem[]> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of chunksOf(request)) chunks.push(chunk);
  let value: unknown;
  try {
    value = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (error) {
    throw badRequest('invalid-json', `the body is not valid JSON: ${(error as Error).message}`);
  }
  if (value && typeof value === 'object' && !Array.isArray(value) && 'items' in value)
    value = (value as { items: unknown }).items;
  const parsed = itemArray.safeParse(value);
  if (!parsed.success)
    throw badRequest(
      'invalid-batch',
      `send a JSON array of items (or NDJSON, one item per line): ${parsed.error.issues[0]?.message}`,
    );
  if (parsed.data.length > BATCH_LIMITS.maxItems) throw tooMany();
  return parsed.data.map(fromValue);
}

/**
 * NDJSON, read as it streams: one item per line, blank lines skipped. A line that is not JSON, or is
 * over the item limit, becomes a refused item (its bytes are not kept) and the others still run.
 */
async function parseNdjson(request: Request): Promise<ParsedItem[]> {
  const items: ParsedItem[] = [];
  let parts: Buffer[] = [];
  let lineBytes = 0;
  const endLine = () => {
    const bytes = lineBytes;
    const text = bytes <= BATCH_LIMITS.maxItemBytes ? Buffer.concat(parts).toString('utf8').trim() : '';
    parts = [];
    lineBytes = 0;
    if (bytes > BATCH_LIMITS.maxItemBytes) {
      items.push({ input: null, refused: itemTooLarge(bytes) });
    } else if (text) {
      try {
        items.push({ input: JSON.stringify(JSON.parse(text)) });
      } catch (error) {
        items.push({ input: null, refused: `invalid-json: ${(error as Error).message}` });
      }
    }
    if (items.length > BATCH_LIMITS.maxItems) throw tooMany();
  };
  for await (const chunk of chunksOf(request)) {
    let buffer = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    for (let nl = buffer.indexOf(10); nl !== -1; nl = buffer.indexOf(10)) {
      const piece = buffer.subarray(0, nl);
      lineBytes += piece.length;
      if (lineBytes <= BATCH_LIMITS.maxItemBytes) parts.push(piece);
      endLine();
      buffer = buffer.subarray(nl + 1);
    }
    lineBytes += buffer.length;
    if (lineBytes <= BATCH_LIMITS.maxItemBytes) parts.push(Buffer.from(buffer));
    else parts = [];
  }
  endLine();
  if (!items.length) throw badRequest('invalid-batch', 'the NDJSON body holds no items');
  return items;
}

/** The items of a batch request body: JSON (an array) or NDJSON (one item per line). */
export async function parseBatchBody(request: Request): Promise<ParsedItem[]> {
  const type = (request.headers.get('content-type') ?? '').toLowerCase();
  if (/^application\/(x-)?(ndjson|jsonl|jsonlines)\b/.test(type)) return parseNdjson(request);
  if (/^application\/([a-z.+-]*\+)?json\b/.test(type)) return parseJsonBody(request);
  throw new Problem(
    415,
    'unsupported-media-type',
    'Unsupported media type',
    'send the items as application/json (an array) or application/x-ndjson (one item per line)',
  );
}
