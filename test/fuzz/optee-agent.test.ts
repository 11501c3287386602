// Property tests of the host side of the OP-TEE board-agent protocol (docs/optee-agent-protocol.md,
// adapters/optee/agent-client.ts). The agent runs in the board's normal world, outside the TEE, so what it
// sends is outside input: every reply stream must come out as well-formed replies or an
// AgentProtocolError, never a RangeError from reading past a buffer, and never a reply lined up with the
// wrong request.
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AgentClient,
  AgentProtocolError,
  AgentUnavailableError,
  decodeHello,
  decodeInvokePayload,
  decodeSession,
  encodeRequest,
  FRAME_MAGIC,
  ReplyDecoder,
  type AgentReply,
} from '../../adapters/optee/agent-client.ts';
import { cleanupAll, tempDir } from '../helpers/env.ts';
import { chunked, fuzz, fuzzAsync, fuzzTimeout, mutationsOf } from '../helpers/fuzz.ts';

const MAX = 4096;
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};
/** A reply as the agent (agent.c) frames it. */
const encodeReply = (r: AgentReply) =>
  Buffer.concat([
    u32(FRAME_MAGIC),
    u32(9 + r.payload.length),
    Buffer.from([r.status]),
    u32(r.ret),
    u32(r.origin),
    r.payload,
  ]);
/** INVOKE's payload as agent.c builds it. */
const invokePayload = (sizes: [number, number], out0: Uint8Array, out1: Uint8Array) =>
  Buffer.concat([u32(sizes[0]), u32(sizes[1]), u32(out0.length), out0, u32(out1.length), out1]);

const reply = fc.record({
  status: fc.nat(255),
  ret: fc.nat({ max: 0xffffffff }),
  origin: fc.nat({ max: 0xffffffff }),
  payload: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
});
const cuts = fc.array(fc.nat(), { maxLength: 12 });
/** Garbage biased towards plausible frame headers: the right magic with small, edge and huge lengths. */
const garbage = fc.oneof(
  fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
  fc
    .tuple(
      fc.oneof(fc.constant(FRAME_MAGIC), fc.nat({ max: 0xffffffff })),
      fc.oneof(fc.nat(16), fc.constantFrom(MAX, MAX + 1, 0xffffffff), fc.nat({ max: 0xffffffff })),
      fc.uint8Array({ maxLength: 200 }),
    )
    .map(([magic, length, rest]) => Buffer.concat([u32(magic), u32(length), Buffer.from(rest)])),
  reply.map(encodeReply),
);

describe('OP-TEE agent reply frames (ReplyDecoder)', () => {
  it(
    'round-trips any sequence of replies, however the stream is cut, holding back less than one frame',
    () =>
      fuzz(
        'optee agent: reply round trip',
        fc.property(fc.array(reply, { maxLength: 6 }), cuts, (replies, at) => {
          const decoder = new ReplyDecoder(MAX);
          const got: AgentReply[] = [];
          for (const chunk of chunked(Buffer.concat(replies.map(encodeReply)), at)) {
            got.push(...decoder.push(chunk));
            expect(decoder.bufferedBytes).toBeLessThan(8 + MAX);
          }
          expect(got).toEqual(replies);
          expect(decoder.bufferedBytes).toBe(0);
        }),
        300,
      ),
    fuzzTimeout(),
  );

  it(
    'on garbage, yields replies within the limit or throws an AgentProtocolError; never over-buffers',
    () =>
      fuzz(
        'optee agent: reply garbage',
        fc.property(fc.array(garbage, { minLength: 1, maxLength: 4 }), cuts, (pieces, at) => {
          const decoder = new ReplyDecoder(MAX);
          try {
            for (const chunk of chunked(Buffer.concat(pieces), at)) {
              for (const r of decoder.push(chunk)) {
                expect(r.payload.length).toBeLessThanOrEqual(MAX - 9);
                expect(r.status).toBeLessThanOrEqual(255);
              }
              expect(decoder.bufferedBytes).toBeLessThan(8 + MAX);
            }
          } catch (error) {
            if (!(error instanceof AgentProtocolError)) throw error;
          }
        }),
        500,
      ),
    fuzzTimeout(),
  );
});

describe('OP-TEE agent payloads', () => {
  const caps = fc.tuple(fc.nat(600), fc.nat(600));

  it(
    'INVOKE: a payload decodes to exactly the outputs it carries, within the capacities, or is refused',
    () =>
      fuzz(
        'optee agent: invoke payloads',
        fc.property(
          fc.oneof(
            // Well-formed, then mutated as a broken or hostile agent might send it.
            fc
              .tuple(
                fc.tuple(fc.nat({ max: 0xffffffff }), fc.nat({ max: 0xffffffff })),
                fc.uint8Array({ maxLength: 300 }),
                fc.uint8Array({ maxLength: 80 }),
              )
              .chain(([sizes, a, b]) =>
                fc.oneof(fc.constant(invokePayload(sizes, a, b)), mutationsOf(invokePayload(sizes, a, b))),
              ),
            fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
          ),
          caps,
          fc.nat({ max: 0xffffffff }),
          (payload, capacities, ret) => {
            let result;
            try {
              result = decodeInvokePayload({ status: 0, ret, origin: 4, payload }, capacities);
            } catch (error) {
              if (error instanceof AgentProtocolError) return;
              throw error;
            }
            expect(result.out[0].length).toBeLessThanOrEqual(capacities[0]);
            expect(result.out[1].length).toBeLessThanOrEqual(capacities[1]);
            expect(result.ret).toBe(ret);
            // Nothing in the payload is ignored: it is exactly the encoding of what came out.
            expect(invokePayload(result.sizes, result.out[0], result.out[1]).equals(payload)).toBe(true);
          },
        ),
        500,
      ),
    fuzzTimeout(),
  );

  it(
    'HELLO and OPEN: a payload is a typed greeting or session, or an AgentProtocolError',
    () =>
      fuzz(
        'optee agent: hello and open payloads',
        fc.property(
          fc.oneof(
            fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b)),
            fc.jsonValue({ maxDepth: 2 }).map((j) => Buffer.from(JSON.stringify(j) ?? '')),
            fc
              .record({
                agent: fc.oneof(fc.string(), fc.nat()),
                implId: fc.oneof(fc.nat(), fc.integer(), fc.double(), fc.string()),
                implCaps: fc.nat(),
                genCaps: fc.oneof(fc.nat(), fc.constant(-1)),
                supplicant: fc.oneof(fc.boolean(), fc.constant('true')),
              })
              .map((h) => Buffer.from(JSON.stringify(h))),
          ),
          (payload) => {
            for (const decode of [decodeHello, decodeSession]) {
              try {
                const value = decode(payload);
                if (decode === decodeSession) expect(payload.length).toBe(4);
                else {
                  const hello = value as ReturnType<typeof decodeHello>;
                  expect(typeof hello.agent).toBe('string');
                  expect(Number.isInteger(hello.implId) && hello.implId >= 0).toBe(true);
                  expect(typeof hello.supplicant).toBe('boolean');
                }
              } catch (error) {
                if (!(error instanceof AgentProtocolError)) throw error;
              }
            }
          },
        ),
        500,
      ),
    fuzzTimeout(),
  );
});

describe('AgentClient against a hostile agent', () => {
  // A stand-in agent on a Unix socket: it answers the next request with whatever bytes the property
  // chose, and a well-formed HELLO after that.
  let server: Server;
  let socketPath: string;
  let answer: Buffer = Buffer.alloc(0);
  const sockets = new Set<Socket>();
  const helloReply = encodeReply({
    status: 0,
    ret: 0,
    origin: 0,
    payload: Buffer.from('{"agent":"fake","implId":1,"implCaps":0,"genCaps":0,"supplicant":true}'),
  });

  beforeAll(async () => {
    socketPath = join(await tempDir('ebcc-optee-fuzz-'), 'agent.sock');
    server = createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
      let buffered = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        while (buffered.length >= 8 && buffered.length >= 8 + buffered.readUInt32BE(4)) {
          const op = buffered[8];
          buffered = buffered.subarray(8 + buffered.readUInt32BE(4));
          socket.write(op === 1 ? helloReply : answer);
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  });

  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server?.close(resolve));
    await cleanupAll();
  });

  it(
    'an INVOKE answered with any bytes resolves well-formed or fails as the agent lost; the next request works',
    () =>
      fuzzAsync(
        'optee agent: client against hostile replies',
        fc.asyncProperty(
          fc.oneof(
            garbage,
            fc
              .tuple(reply, fc.uint8Array({ maxLength: 40 }), fc.uint8Array({ maxLength: 40 }))
              .map(([r, a, b]) => encodeReply({ ...r, payload: invokePayload([a.length, b.length], a, b) })),
            fc.array(reply, { minLength: 2, maxLength: 3 }).map((rs) => Buffer.concat(rs.map(encodeReply))),
          ),
          async (bytes) => {
            answer = bytes;
            const client = new AgentClient(socketPath, 300);
            try {
              try {
                const got = await client.invoke(7, 0, [Buffer.from('in'), Buffer.alloc(32)], [64, 64]);
                if ('out' in got) {
                  expect(got.out[0].length).toBeLessThanOrEqual(64);
                  expect(got.out[1].length).toBeLessThanOrEqual(64);
                } else expect(got.status).toBe(2);
              } catch (error) {
                if (!(error instanceof AgentUnavailableError)) throw error;
              }
              // Whatever happened, the client is usable: a reply left over from the hostile answer is
              // never taken for this one (the connection was dropped and made anew).
              expect((await client.hello()).agent).toBe('fake');
            } finally {
              client.shutdown();
            }
          },
        ),
        60,
      ),
    fuzzTimeout(60_000),
  );

  // Found by the property above (seed -1815653108): a reply cut short timed out, and the late `close` of
  // that connection then failed the next request, already waiting on a new connection.
  it('a reply that never completes times out, and does not fail the next request', async () => {
    answer = Buffer.from([0x45, 0x42, 0x41, 0x31, 0, 0, 0x10, 0]);
    const client = new AgentClient(socketPath, 300);
    try {
      await expect(client.invoke(7, 0, [Buffer.alloc(0), Buffer.alloc(0)], [8, 8])).rejects.toThrow(
        /did not answer within 300 ms/,
      );
      expect((await client.hello()).agent).toBe('fake');
    } finally {
      client.shutdown();
    }
  });

  it('a request in flight when the client shuts down fails as the agent lost', async () => {
    answer = Buffer.alloc(0);
    const client = new AgentClient(socketPath, 5_000);
    const invoked = client.invoke(7, 0, [Buffer.alloc(0), Buffer.alloc(0)], [8, 8]);
    await new Promise((r) => setTimeout(r, 100));
    client.shutdown();
    await expect(invoked).rejects.toBeInstanceOf(AgentUnavailableError);
  });

  it('requests are framed as the agent reads them', () => {
    const frame = encodeRequest(4, Buffer.from([1, 2, 3]));
    expect(frame.readUInt32BE(0)).toBe(FRAME_MAGIC);
    expect(frame.readUInt32BE(4)).toBe(4);
    expect([...frame.subarray(8)]).toEqual([4, 1, 2, 3]);
  });
});
