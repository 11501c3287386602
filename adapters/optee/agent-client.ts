import { connect, type Socket } from 'node:net';
import { z } from 'zod';

/**
 * The host side of the board agent protocol (docs/optee-agent-protocol.md): length-prefixed frames
 * `"EBA1" ‖ u32 length ‖ body` on one byte stream (the board's virtio-serial port, reached through the
 * Unix socket QEMU serves). One request is in flight at a time; callers queue.
 */
export const FRAME_MAGIC = 0x45424131;
export const MAX_FRAME = 16 * 1024 * 1024;

export const OP = { hello: 1, install: 2, open: 3, invoke: 4, close: 5 } as const;
export const STATUS = { ok: 0, tee: 1, agent: 2 } as const;

/** GlobalPlatform TEEC result codes the adapter interprets. */
export const TEEC = {
  success: 0,
  generic: 0xffff0000,
  accessDenied: 0xffff0001,
  badParameters: 0xffff0006,
  badState: 0xffff0007,
  itemNotFound: 0xffff0008,
  communication: 0xffff000e,
  security: 0xffff000f,
  shortBuffer: 0xffff0010,
  targetDead: 0xffff3024,
} as const;

export interface AgentReply {
  status: number;
  ret: number;
  origin: number;
  payload: Buffer;
}

export class AgentUnavailableError extends Error {}

/**
 * The agent broke the protocol (bad magic or length, a reply nobody asked for, a payload that does not
 * parse): the stream can no longer be trusted to line replies up with requests, so the connection is
 * dropped, as when the agent is lost.
 */
export class AgentProtocolError extends AgentUnavailableError {}

const FRAME_HEADER_BYTES = 8;
const REPLY_HEADER_BYTES = 9;

/**
 * Splits the agent's byte stream into replies. It holds back at most one frame (header and body, the body
 * at most `maxFrame` bytes) and throws an AgentProtocolError on a bad magic or length, after which it is
 * not to be used again.
 */
export class ReplyDecoder {
  private buffered: Buffer = Buffer.alloc(0);

  constructor(private readonly maxFrame = MAX_FRAME) {}

  get bufferedBytes(): number {
    return this.buffered.length;
  }

  push(chunk: Buffer): AgentReply[] {
    this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
    const replies: AgentReply[] = [];
    while (this.buffered.length >= FRAME_HEADER_BYTES) {
      if (this.buffered.readUInt32BE(0) !== FRAME_MAGIC) throw new AgentProtocolError('bad frame magic');
      const length = this.buffered.readUInt32BE(4);
      if (length > this.maxFrame || length < REPLY_HEADER_BYTES)
        throw new AgentProtocolError(`bad frame length ${length}`);
      if (this.buffered.length < FRAME_HEADER_BYTES + length) break;
      const body = this.buffered.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + length);
      this.buffered = this.buffered.subarray(FRAME_HEADER_BYTES + length);
      replies.push({
        status: body[0]!,
        ret: body.readUInt32BE(1),
        origin: body.readUInt32BE(5),
        payload: Buffer.from(body.subarray(REPLY_HEADER_BYTES)),
      });
    }
    // A copy, so a held-back partial frame does not pin the whole chunk it came in.
    if (this.buffered.length && this.buffered.buffer === chunk.buffer)
      this.buffered = Buffer.from(this.buffered);
    return replies;
  }
}

/** Frames a request: `"EBA1" ‖ u32 length ‖ op ‖ body`. */
export function encodeRequest(op: number, body: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([u32(FRAME_MAGIC), u32(body.length + 1), Buffer.from([op]), body]);
}

const Hello = z.object({
  agent: z.string().max(256),
  implId: z.number().int().nonnegative(),
  genCaps: z.number().int().nonnegative(),
  supplicant: z.boolean(),
});
export type Hello = z.infer<typeof Hello>;

/** HELLO's ok payload: the agent's JSON description of the board's TEE. */
export function decodeHello(payload: Buffer): Hello {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload));
  } catch {
    throw new AgentProtocolError('HELLO answered something other than UTF-8 JSON');
  }
  const parsed = Hello.safeParse(json);
  if (!parsed.success) throw new AgentProtocolError(`HELLO answered ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

/** OPEN's ok payload: the session id. */
export function decodeSession(payload: Buffer): number {
  if (payload.length !== 4)
    throw new AgentProtocolError(`OPEN answered ${payload.length} bytes, not a session`);
  return payload.readUInt32BE(0);
}

/**
 * INVOKE's payload (status ok or tee): `size0 ‖ size1 ‖ n0 ‖ out0 ‖ n1 ‖ out1`, exactly, with each output
 * within the capacity the host gave it.
 */
export function decodeInvokePayload(reply: AgentReply, capacities: [number, number]): InvokeResult {
  const p = reply.payload;
  const bad = (why: string) => new AgentProtocolError(`INVOKE answered a malformed payload: ${why}`);
  if (p.length < 16) throw bad(`${p.length} bytes`);
  const n0 = p.readUInt32BE(8);
  if (n0 > capacities[0] || 16 + n0 > p.length) throw bad(`output 0 of ${n0} bytes`);
  const n1 = p.readUInt32BE(12 + n0);
  if (n1 > capacities[1] || 16 + n0 + n1 !== p.length) throw bad(`output 1 of ${n1} bytes`);
  return {
    ret: reply.ret,
    origin: reply.origin,
    sizes: [p.readUInt32BE(0), p.readUInt32BE(4)],
    out: [p.subarray(12, 12 + n0), p.subarray(16 + n0)],
  };
}

export interface InvokeResult {
  ret: number;
  origin: number;
  /** Sizes the TA reported for its two outputs (on TEE_ERROR_SHORT_BUFFER: the sizes it needed). */
  sizes: [number, number];
  out: [Buffer, Buffer];
}

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

export function uuidBytes(uuid: string): Buffer {
  const hex = uuid.replace(/-/g, '');
  if (!/^[0-9a-f]{32}$/.test(hex)) throw new Error(`not a TA UUID: ${uuid}`);
  return Buffer.from(hex, 'hex');
}

export function describeTeec(ret: number, origin: number): string {
  const names: Record<number, string> = {
    [TEEC.generic]: 'TEE_ERROR_GENERIC',
    [TEEC.accessDenied]: 'TEE_ERROR_ACCESS_DENIED',
    [TEEC.badParameters]: 'TEE_ERROR_BAD_PARAMETERS',
    [TEEC.badState]: 'TEE_ERROR_BAD_STATE',
    [TEEC.itemNotFound]: 'TEE_ERROR_ITEM_NOT_FOUND',
    [TEEC.communication]: 'TEE_ERROR_COMMUNICATION',
    [TEEC.shortBuffer]: 'TEE_ERROR_SHORT_BUFFER',
    [TEEC.security]: 'TEE_ERROR_SECURITY',
    [TEEC.targetDead]: 'TEE_ERROR_TARGET_DEAD',
  };
  const origins = ['', 'API', 'COMMS', 'TEE', 'TRUSTED_APP'];
  const name = names[ret] ?? `0x${ret.toString(16).padStart(8, '0')}`;
  return `${name} (origin ${origins[origin] ?? origin})`;
}

export class AgentClient {
  private socket: Socket | undefined;
  private decoder = new ReplyDecoder();
  private pending: { resolve: (r: AgentReply) => void; reject: (e: Error) => void } | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly path: string,
    private readonly timeoutMs = 30_000,
  ) {}

  private async ensure(): Promise<Socket> {
    if (this.socket && !this.socket.destroyed) return this.socket;
    if (this.closed) throw new AgentUnavailableError('the agent connection is closed');
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(this.path);
      s.once('connect', () => resolve(s));
      s.once('error', (error) =>
        reject(new AgentUnavailableError(`cannot reach the board agent at ${this.path}: ${error.message}`)),
      );
    });
    this.decoder = new ReplyDecoder();
    socket.on('data', (chunk: Buffer) => this.onData(socket, chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      // The close of a connection already given up on (a timeout, a protocol error) comes late, when the
      // next request may be waiting on a new one: that request is not this connection's to fail.
      if (this.socket !== socket) return;
      this.socket = undefined;
      this.pending?.reject(new AgentUnavailableError('the board agent connection closed'));
      this.pending = undefined;
    });
    this.socket = socket;
    return socket;
  }

  private onData(socket: Socket, chunk: Buffer): void {
    if (socket !== this.socket) return;
    try {
      for (const reply of this.decoder.push(chunk)) {
        const pending = this.pending;
        // The agent answers each request once, in order: a reply with none pending would be taken for
        // the next request's.
        if (!pending) throw new AgentProtocolError('the board agent sent a reply nobody asked for');
        this.pending = undefined;
        pending.resolve(reply);
      }
    } catch (error) {
      this.drop(socket, error as AgentProtocolError);
    }
  }

  /** Ends a connection that broke the protocol: the pending request fails with why, the next reconnects. */
  private drop(socket: Socket, error: AgentProtocolError): void {
    if (this.socket === socket) this.socket = undefined;
    const pending = this.pending;
    this.pending = undefined;
    pending?.reject(error);
    socket.destroy();
  }

  /** Sends one request and waits for its reply; requests are serialized. */
  request(op: number, body: Buffer = Buffer.alloc(0), timeoutMs = this.timeoutMs): Promise<AgentReply> {
    const run = async () => {
      const socket = await this.ensure();
      const frame = encodeRequest(op, body);
      return new Promise<AgentReply>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.pending = undefined;
          // A reply that comes later would be taken for the next request's: start over on a new stream.
          if (this.socket === socket) this.socket = undefined;
          socket.destroy();
          reject(new AgentUnavailableError(`the board agent did not answer within ${timeoutMs} ms`));
        }, timeoutMs);
        this.pending = {
          resolve: (r) => {
            clearTimeout(timer);
            resolve(r);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        };
        socket.write(frame);
      });
    };
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  async hello(): Promise<Hello> {
    const reply = await this.request(OP.hello, undefined, 10_000);
    if (reply.status !== STATUS.ok) throw new Error(`agent HELLO failed: ${reply.payload.toString()}`);
    return this.checked(() => decodeHello(reply.payload));
  }

  /** Decodes a reply's payload; one that breaks the protocol also ends the connection. */
  private checked<T>(decode: () => T): T {
    try {
      return decode();
    } catch (error) {
      if (error instanceof AgentProtocolError && this.socket) this.drop(this.socket, error);
      throw error;
    }
  }

  async install(uuid: string, image: Uint8Array): Promise<void> {
    const reply = await this.request(OP.install, Buffer.concat([uuidBytes(uuid), image]));
    if (reply.status !== STATUS.ok)
      throw new Error(`installing TA ${uuid} failed: ${reply.payload.toString()}`);
  }

  /**
   * Opens a session; the reply tells a TEE error (e.g. an unknown UUID) apart from an agent one. An ok
   * reply's payload is the session id (checked: exactly 4 bytes).
   */
  async open(uuid: string): Promise<AgentReply> {
    const reply = await this.request(OP.open, uuidBytes(uuid));
    if (reply.status === STATUS.ok) this.checked(() => decodeSession(reply.payload));
    return reply;
  }

  async invoke(
    session: number,
    func: number,
    inputs: [Uint8Array, Uint8Array],
    capacities: [number, number],
    timeoutMs = this.timeoutMs,
  ): Promise<InvokeResult | AgentReply> {
    const reply = await this.request(
      OP.invoke,
      Buffer.concat([
        u32(session),
        u32(func),
        u32(capacities[0]),
        u32(capacities[1]),
        u32(inputs[0].byteLength),
        inputs[0],
        u32(inputs[1].byteLength),
        inputs[1],
      ]),
      timeoutMs,
    );
    if (reply.status === STATUS.agent) return reply;
    return this.checked(() => decodeInvokePayload(reply, capacities));
  }

  async close(session: number): Promise<void> {
    await this.request(OP.close, u32(session));
  }

  shutdown(): void {
    this.closed = true;
    const socket = this.socket;
    this.socket = undefined;
    this.pending?.reject(new AgentUnavailableError('the agent connection is closed'));
    this.pending = undefined;
    socket?.destroy();
  }
}
