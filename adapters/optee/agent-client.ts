import { connect, type Socket } from 'node:net';

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
  private buffered = Buffer.alloc(0);
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
    this.buffered = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      if (this.socket === socket) this.socket = undefined;
      this.pending?.reject(new AgentUnavailableError('the board agent connection closed'));
      this.pending = undefined;
    });
    this.socket = socket;
    return socket;
  }

  private onData(chunk: Buffer): void {
    this.buffered = Buffer.concat([this.buffered, chunk]);
    while (this.buffered.length >= 8) {
      if (this.buffered.readUInt32BE(0) !== FRAME_MAGIC) {
        this.socket?.destroy(new Error('bad frame magic'));
        return;
      }
      const length = this.buffered.readUInt32BE(4);
      if (length > MAX_FRAME || length < 9) {
        this.socket?.destroy(new Error('bad frame length'));
        return;
      }
      if (this.buffered.length < 8 + length) return;
      const body = this.buffered.subarray(8, 8 + length);
      this.buffered = this.buffered.subarray(8 + length);
      const reply: AgentReply = {
        status: body[0]!,
        ret: body.readUInt32BE(1),
        origin: body.readUInt32BE(5),
        payload: Buffer.from(body.subarray(9)),
      };
      const pending = this.pending;
      this.pending = undefined;
      pending?.resolve(reply);
    }
  }

  /** Sends one request and waits for its reply; requests are serialized. */
  request(op: number, body: Buffer = Buffer.alloc(0), timeoutMs = this.timeoutMs): Promise<AgentReply> {
    const run = async () => {
      const socket = await this.ensure();
      const frame = Buffer.concat([u32(FRAME_MAGIC), u32(body.length + 1), Buffer.from([op]), body]);
      return new Promise<AgentReply>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.pending = undefined;
          // A reply that comes later would be taken for the next request's: start over on a new stream.
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

  async hello(): Promise<{ agent: string; implId: number; genCaps: number; supplicant: boolean }> {
    const reply = await this.request(OP.hello, undefined, 10_000);
    if (reply.status !== STATUS.ok) throw new Error(`agent HELLO failed: ${reply.payload.toString()}`);
    return JSON.parse(reply.payload.toString('utf8')) as {
      agent: string;
      implId: number;
      genCaps: number;
      supplicant: boolean;
    };
  }

  async install(uuid: string, image: Uint8Array): Promise<void> {
    const reply = await this.request(OP.install, Buffer.concat([uuidBytes(uuid), image]));
    if (reply.status !== STATUS.ok)
      throw new Error(`installing TA ${uuid} failed: ${reply.payload.toString()}`);
  }

  /** Opens a session; the reply tells a TEE error (e.g. an unknown UUID) apart from an agent one. */
  open(uuid: string): Promise<AgentReply> {
    return this.request(OP.open, uuidBytes(uuid));
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
    const p = reply.payload;
    const n0 = p.readUInt32BE(8);
    const out0 = p.subarray(12, 12 + n0);
    const n1 = p.readUInt32BE(12 + n0);
    const out1 = p.subarray(16 + n0, 16 + n0 + n1);
    return {
      ret: reply.ret,
      origin: reply.origin,
      sizes: [p.readUInt32BE(0), p.readUInt32BE(4)],
      out: [out0, out1],
    };
  }

  async close(session: number): Promise<void> {
    await this.request(OP.close, u32(session));
  }

  shutdown(): void {
    this.closed = true;
    this.socket?.destroy();
    this.socket = undefined;
  }
}
