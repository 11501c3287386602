// Property tests of the frame formats that carry outside bytes: the anchor wire (fd 3 between host and
// anchor, and stdin/stdout between the sim host and its shim), the stage framing functions use
// (frames.mjs), and the shim's reader of a persistent stage's stdout.
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { StageFrameReader } from '../../adapters/sim/shim/stage-frames.ts';
import { parseGuestFrame } from '../../runtime/anchor/guest-frames.ts';
import { encodeFrame, FrameReader } from '../../runtime/anchor/guest/wire.mjs';
import { chunked, fuzz, fuzzAsync, fuzzTimeout } from '../helpers/fuzz.ts';

// The sample's own framing module, as its stage runs it (plain JS, shipped in the bundle without types).
const framesModule: string = '../../functions/order-signer/stages/frames.mjs';
const { readFrames } = (await import(framesModule)) as {
  readFrames(stream: AsyncIterable<Buffer>, maxFrameBytes?: number): AsyncGenerator<Buffer>;
};

const MAX = 4096;
const header = fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 5 });
const body = fc.option(fc.uint8Array({ maxLength: 600 }), { nil: undefined });
const cuts = fc.array(fc.nat(), { maxLength: 12 });
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};
/** Garbage with a bias towards plausible frame prefixes (small or huge lengths). */
const garbage = fc.oneof(
  fc.uint8Array({ maxLength: 400 }).map((b) => Buffer.from(b)),
  fc
    .tuple(
      fc.oneof(fc.nat(64), fc.constant(0xffffffff), fc.nat()),
      fc.nat(64),
      fc.uint8Array({ maxLength: 200 }),
    )
    .map(([len, hlen, rest]) => Buffer.concat([u32(len), u32(hlen), Buffer.from(rest)])),
);

function readAllFrames(reader: FrameReader, chunks: Buffer[]) {
  const out = [];
  for (const chunk of chunks) {
    out.push(...reader.push(chunk));
    // Whatever it holds back is less than one frame of the limit: it never buffers past it.
    expect((reader as unknown as { buffered: number }).buffered).toBeLessThan(MAX + 4);
  }
  return out;
}

describe('anchor wire (runtime/anchor/guest/wire.mjs)', () => {
  it(
    'round-trips any sequence of frames, however the stream is cut',
    () =>
      fuzz(
        'wire: round trip',
        fc.property(fc.array(fc.tuple(header, body), { maxLength: 6 }), cuts, (frames, at) => {
          const stream = Buffer.concat(frames.map(([h, b]) => encodeFrame(h, b)));
          const got = readAllFrames(new FrameReader(MAX), chunked(stream, at));
          expect(got.length).toBe(frames.length);
          got.forEach((frame, i) => {
            expect(frame.header).toEqual(JSON.parse(JSON.stringify(frames[i]![0])));
            expect(Buffer.from(frame.body).equals(Buffer.from(frames[i]![1] ?? []))).toBe(true);
          });
        }),
        300,
      ),
    fuzzTimeout(),
  );

  it(
    'on garbage, returns object-headed frames within the limit or throws an Error; never over-buffers',
    () =>
      fuzz(
        'wire: garbage',
        fc.property(fc.array(garbage, { minLength: 1, maxLength: 4 }), cuts, (pieces, at) => {
          const reader = new FrameReader(MAX);
          try {
            for (const frame of readAllFrames(reader, chunked(Buffer.concat(pieces), at))) {
              expect(typeof frame.header === 'object' && frame.header !== null).toBe(true);
              expect(Array.isArray(frame.header)).toBe(false);
              expect(frame.body.length).toBeLessThanOrEqual(MAX);
            }
          } catch (error) {
            expect(error).toBeInstanceOf(Error);
          }
        }),
        500,
      ),
    fuzzTimeout(),
  );

  // A frame whose header was `null` (or a number, or an array) came out of the reader, and the gateway's
  // anchor host then read `header.t` off it and crashed (the garbage property now checks this). Minimal case:
  it('regression: a frame whose header is not a JSON object is an error, not a frame', () => {
    for (const h of [null, 0, 'x', [1], true]) {
      expect(() => new FrameReader(MAX).push(encodeFrame(h))).toThrow(/not a JSON object/);
    }
  });

  it('regression: a declared length over the limit is refused before any of it is buffered', () => {
    const reader = new FrameReader(MAX);
    expect(() => reader.push(u32(MAX + 1))).toThrow(/bad frame length/);
    expect(() => new FrameReader(MAX).push(u32(0xffffffff))).toThrow(/bad frame length/);
  });
});

describe('anchor → host frames (runtime/anchor/guest-frames.ts)', () => {
  it(
    'any JSON header is either a typed message whose fields the host can use, or refused',
    () =>
      fuzz(
        'guest frames: arbitrary headers',
        fc.property(
          fc.oneof(
            fc.jsonValue({ maxDepth: 3 }),
            fc.record(
              {
                t: fc.constantFrom(
                  'ready',
                  'load-error',
                  'console',
                  'response',
                  'error',
                  'done',
                  'stage',
                  'net',
                ),
                id: fc.oneof(fc.nat(), fc.double(), fc.string(), fc.constant(null)),
                invocation: fc.oneof(fc.nat(), fc.constant(null), fc.string()),
                status: fc.oneof(fc.integer({ min: -1, max: 1000 }), fc.double(), fc.string()),
                statusText: fc.string({ maxLength: 4 }),
                headers: fc.oneof(
                  fc.array(fc.tuple(fc.string({ maxLength: 6 }), fc.string({ maxLength: 6 })), {
                    maxLength: 3,
                  }),
                  fc.jsonValue({ maxDepth: 1 }),
                ),
                waitUntilErrors: fc.oneof(
                  fc.array(fc.string(), { maxLength: 2 }),
                  fc.jsonValue({ maxDepth: 1 }),
                ),
                level: fc.string({ maxLength: 6 }),
                text: fc.oneof(fc.string(), fc.nat()),
                message: fc.oneof(fc.string(), fc.nat()),
                callId: fc.oneof(fc.nat(), fc.string(), fc.constant(null)),
                stage: fc.oneof(fc.string(), fc.nat()),
                url: fc.oneof(fc.webUrl(), fc.nat()),
                method: fc.string({ maxLength: 6 }),
              },
              { requiredKeys: ['t'] },
            ),
          ),
          (h) => {
            const parsed = parseGuestFrame(h);
            if (!parsed.ok) return;
            const f = parsed.frame;
            // What the host then builds from the frame must not throw.
            if (f.t === 'response') {
              const empty = f.status === 204 || f.status === 205 || f.status === 304;
              new Response(empty ? null : new Uint8Array(1), {
                status: f.status,
                statusText: f.statusText ?? '',
                headers: f.headers,
              });
            }
            if (f.t === 'done') expect(Array.isArray(f.waitUntilErrors)).toBe(true);
            if ('id' in f) expect(Number.isInteger(f.id)).toBe(true);
          },
        ),
        1000,
      ),
    fuzzTimeout(),
  );

  it('regression: frames that used to crash or 500 the host are refused', () => {
    expect(parseGuestFrame(null).ok).toBe(false);
    expect(parseGuestFrame({ t: 'done', id: 1 }).ok).toBe(false);
    expect(parseGuestFrame({ t: 'response', id: 1, status: 1000, headers: [] }).ok).toBe(false);
    expect(parseGuestFrame({ t: 'response', id: 1, status: 200, headers: 7 }).ok).toBe(false);
    expect(parseGuestFrame({ t: 'response', id: 1, status: 200, headers: [['a b', 'x']] }).ok).toBe(false);
    expect(parseGuestFrame({ t: 'response', id: 1, status: 200, headers: [['a', 'x\ny']] }).ok).toBe(false);
    expect(parseGuestFrame({ t: 'response', id: 1, status: 200, headers: [['a', 'x']] }).ok).toBe(true);
  });
});

async function collect(chunks: Buffer[], max?: number) {
  const frames: Buffer[] = [];
  try {
    for await (const f of readFrames(Readable.from(chunks, { objectMode: true }), max)) frames.push(f);
    return { frames, error: undefined };
  } catch (error) {
    return { frames, error: error as Error };
  }
}

describe('stage framing (functions/order-signer/stages/frames.mjs)', () => {
  it(
    'round-trips any payloads, however stdin is cut',
    () =>
      fuzzAsync(
        'frames.mjs: round trip',
        fc.asyncProperty(
          fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 6 }),
          cuts,
          async (payloads, at) => {
            const stream = Buffer.concat(payloads.flatMap((p) => [u32(p.length), Buffer.from(p)]));
            const { frames, error } = await collect(chunked(stream, at).filter((c) => c.length));
            expect(error).toBeUndefined();
            expect(frames.map((f) => Buffer.from(f).toString('hex'))).toEqual(
              payloads.map((p) => Buffer.from(p).toString('hex')),
            );
          },
        ),
        300,
      ),
    fuzzTimeout(),
  );

  it(
    'on garbage: ends with frames within the limit, or an Error; never waits for more than the limit',
    () =>
      fuzzAsync(
        'frames.mjs: garbage',
        fc.asyncProperty(fc.array(garbage, { minLength: 1, maxLength: 4 }), cuts, async (pieces, at) => {
          const { frames, error } = await collect(
            chunked(Buffer.concat(pieces), at).filter((c) => c.length),
            MAX,
          );
          for (const f of frames) expect(f.length).toBeLessThanOrEqual(MAX);
          if (error) expect(error).toBeInstanceOf(Error);
        }),
        300,
      ),
    fuzzTimeout(),
  );

  // Before: no limit, so a 0xffffffff length made a stage buffer stdin for ever; a frame cut short by
  // the end of the stream vanished silently; and every chunk re-copied all buffered bytes.
  it('regression: a length over the limit and a truncated frame are errors', async () => {
    expect((await collect([u32(0xffffffff)], MAX)).error?.message).toMatch(/exceeds/);
    expect((await collect([u32(10), Buffer.from('abc')], MAX)).error?.message).toMatch(
      /ended inside a frame/,
    );
  });

  it('regression: a 1 MiB frame delivered a byte at a time is read in linear time', async () => {
    const payload = Buffer.alloc(1 << 20, 7);
    const stream = Buffer.concat([u32(payload.length), payload]);
    const chunks = Array.from({ length: Math.ceil(stream.length / 64) }, (_, i) =>
      stream.subarray(i * 64, i * 64 + 64),
    );
    const { frames, error } = await collect(chunks);
    expect(error).toBeUndefined();
    expect(frames[0]!.equals(payload)).toBe(true);
  });
});

describe("shim's reader of a persistent stage (adapters/sim/shim/stage-frames.ts)", () => {
  it(
    'round-trips frames under the cap, however cut, and reports the first oversized one',
    () =>
      fuzz(
        'shim stage frames',
        fc.property(
          fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 6 }),
          fc.integer({ min: 0, max: 320 }),
          cuts,
          (payloads, cap, at) => {
            const stream = Buffer.concat(payloads.flatMap((p) => [u32(p.length), Buffer.from(p)]));
            const reader = new StageFrameReader();
            const events = [];
            for (const chunk of chunked(stream, at)) {
              const got = reader.push(chunk, cap);
              events.push(...got);
              if (got.some((e) => e.kind === 'oversized')) break;
              expect(reader.pending).toBeLessThan(cap + 4 + 1);
            }
            const firstBig = payloads.findIndex((p) => p.length > cap);
            const expected = firstBig < 0 ? payloads : payloads.slice(0, firstBig);
            const frames = events.filter((e) => e.kind === 'frame');
            expect(frames.map((e) => e.payload.toString('hex'))).toEqual(
              expected.map((p) => Buffer.from(p).toString('hex')),
            );
            if (firstBig >= 0)
              expect(events.at(-1)).toEqual({ kind: 'oversized', length: payloads[firstBig]!.length });
          },
        ),
        500,
      ),
    fuzzTimeout(),
  );

  // Before: only one frame was taken per chunk, so an unasked-for frame written together with an answer
  // stayed buffered and was handed out as the answer to the next request.
  it('regression: two frames in one chunk are both seen', () => {
    const events = new StageFrameReader().push(
      Buffer.concat([u32(1), Buffer.from('a'), u32(1), Buffer.from('b')]),
      8,
    );
    expect(events).toEqual([
      { kind: 'frame', payload: Buffer.from('a') },
      { kind: 'frame', payload: Buffer.from('b') },
    ]);
  });
});
