/**
 * The shim: the only code EBCC adds inside a sim enclave. It makes the enclave's signing key when the
 * enclave starts, hands the host only the public half, runs the stage, and for each request hashes the
 * bytes the stage really received and produced, binds them to the execution's identity and to the
 * previous entry of the enclave's chain, and signs. The host sees digests and signatures it cannot forge.
 *
 * It also makes the enclave's X25519 encryption key. A request sealed to that key (runtime/seal) is
 * opened here, the stage gets the plaintext, and its output and log are sealed to the client's response
 * key before they leave: the host then holds only envelopes, and the evidence binds both the envelopes
 * and (keyed) digests of the plaintexts.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { signCheckpoint, signExecution, genesisDigest } from '../../../runtime/evidence/eat.ts';
import { canonicalJson } from '../../../runtime/util/canonical-json.ts';
import { encodeFrame, FrameReader } from '../../../runtime/anchor/guest/wire.mjs';
import { deriveX25519, generateX25519 } from '../../../runtime/seal/hpke.ts';
import { openReleased, release } from '../../../runtime/keyrelease/release.ts';
import {
  openRequest,
  parseSealedRequest,
  plaintextDigest,
  SealError,
  sealReplies,
  type OpenedRequest,
} from '../../../runtime/seal/envelope.ts';
import type { ExecutionContext, HostToShim, ShimExit, ShimToHost } from './protocol.ts';
import { StageFrameReader } from './stage-frames.ts';

// Equal to the runtime's stored log limit, so that the log a verifier gets is the log that was signed.
const LOG_CAP = 64 * 1024;
// A sealed log (base64url in a JSON envelope) must still fit the stored log limit: its plaintext is cut here.
const SEALED_LOG_CAP = 48 * 1024;
const MAX_FRAME = 80 * 1024 * 1024;
const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest();

const separator = process.argv.indexOf('--');
const mode =
  process.argv[2] === 'persistent' ? 'persistent' : process.argv[2] === 'broker' ? 'broker' : 'oneshot';
const stageArgv = process.argv.slice(separator + 1);
const stageEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('EBCC_SHIM_')));

const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const rawPublicKey = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
// A key broker's key must survive restarts (tenants' secrets are sealed to it): it is derived from the
// sealing key the security monitor gives this measurement (Keystone: sm_derive_sealing_key; SGX:
// EGETKEY). Any other enclave's key is fresh.
const sealingKey = process.env.EBCC_SHIM_SEALING_KEY;
const deviceKey = process.env.EBCC_SHIM_DEVICE_KEY;
const encryptionKey =
  mode === 'broker' && sealingKey ? deriveX25519(Buffer.from(sealingKey, 'hex')) : generateX25519();
/** Secrets released to this enclave, opened inside it. */
const secrets = new Map<string, Buffer>();
let seq = 0;
let prev: Buffer | undefined;

const send = (header: ShimToHost, body?: Uint8Array) => process.stdout.write(encodeFrame(header, body));

function spawnStage(): ChildProcessWithoutNullStreams {
  // Secrets released to this enclave before the stage starts reach it as EBCC_SECRET_<NAME> (base64url).
  const env = { ...stageEnv };
  for (const [name, secret] of secrets)
    env[`EBCC_SECRET_${name.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`] = secret.toString('base64url');
  const child = spawn(stageArgv[0]!, stageArgv.slice(1), { stdio: 'pipe', env });
  child.stdin.on('error', () => undefined);
  return child;
}

/** Bytes read from a stream up to a cap; past it, `over` is set. */
class Capped {
  chunks: Buffer[] = [];
  size = 0;
  over = false;
  constructor(private readonly cap: number) {}
  push(chunk: Buffer): void {
    if (this.size + chunk.length > this.cap) {
      this.over = true;
      const room = this.cap - this.size;
      if (room > 0) this.chunks.push(chunk.subarray(0, room));
      this.size = this.cap;
      return;
    }
    this.chunks.push(chunk);
    this.size += chunk.length;
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

function exitOf(code: number | null, signal: NodeJS.Signals | null): ShimExit {
  if (signal) return { code: null, signal, reason: 'crashed', detail: `the stage died by ${signal}` };
  return { code, signal: null, reason: 'exit' };
}

async function runOneshot(request: Buffer, maxResponseBytes: number) {
  const child = spawnStage();
  const out = new Capped(maxResponseBytes);
  const log = new Capped(LOG_CAP);
  child.stdout.on('data', (c: Buffer) => {
    out.push(c);
    if (out.over) child.kill('SIGKILL');
  });
  child.stderr.on('data', (c: Buffer) => log.push(c));
  child.stdin.end(request);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.once('close', (c, s) => resolve([c, s])),
  );
  const exit: ShimExit = out.over
    ? { code: null, signal: 'SIGKILL', reason: 'output' }
    : exitOf(code, signal);
  return { response: out.over ? Buffer.alloc(0) : out.bytes(), log: log.bytes(), exit };
}

class PersistentStage {
  private readonly child = spawnStage();
  private readonly frames = new StageFrameReader();
  private waiter: ((frame: Buffer | ShimExit) => void) | undefined;
  private log = new Capped(LOG_CAP);
  private died: ShimExit | undefined;
  private maxResponseBytes = 0;

  constructor() {
    this.child.stdout.on('data', (c: Buffer) => this.onData(c));
    this.child.stderr.on('data', (c: Buffer) => this.log.push(c));
    this.child.once('close', (code, signal) => {
      // Ending at all is a failure for a persistent stage; exiting 0 must never read as success.
      this.died ??=
        code === 0
          ? {
              code,
              signal: null,
              reason: 'crashed',
              detail: 'the stage process exited (code 0) instead of answering',
            }
          : exitOf(code, signal);
      this.waiter?.(this.died);
    });
  }

  get ended(): ShimExit | undefined {
    return this.died;
  }

  private onData(chunk: Buffer): void {
    // A stage may write several frames in one chunk: each is looked at, so a frame nobody asked for is
    // never left buffered to be taken as the answer to the next request.
    for (const event of this.frames.push(chunk, this.maxResponseBytes)) {
      if (this.died) return;
      if (event.kind === 'oversized') {
        this.died = {
          code: null,
          signal: 'SIGKILL',
          reason: 'output',
          detail: `a ${event.length}-byte response frame`,
        };
        this.child.kill('SIGKILL');
        return;
      }
      const waiter = this.waiter;
      this.waiter = undefined;
      if (waiter) waiter(event.payload);
      else {
        this.died = {
          code: null,
          signal: 'SIGKILL',
          reason: 'crashed',
          detail: 'the stage wrote a frame nobody asked for',
        };
        this.child.kill('SIGKILL');
      }
    }
  }

  async run(request: Buffer, maxResponseBytes: number) {
    this.maxResponseBytes = maxResponseBytes;
    this.log = new Capped(LOG_CAP);
    if (this.died) return { response: Buffer.alloc(0), log: Buffer.alloc(0), exit: this.died };
    const answer = new Promise<Buffer | ShimExit>((resolve) => (this.waiter = resolve));
    const header = Buffer.alloc(4);
    header.writeUInt32BE(request.length);
    this.child.stdin.write(Buffer.concat([header, request]));
    const got = await answer;
    // stderr written just before the response may still be in its pipe.
    await new Promise((r) => setImmediate(r));
    if (Buffer.isBuffer(got))
      return {
        response: got,
        log: this.log.bytes(),
        exit: { code: 0, signal: null, reason: 'exit' } as ShimExit,
      };
    return { response: Buffer.alloc(0), log: this.log.bytes(), exit: got };
  }
}

/**
 * A persistent stage's process starts only when the host says the enclave is ready (`start`), after
 * the secrets released to it have been opened here, so that its environment holds them; a `run` that
 * comes first starts it too.
 */
let persistentProcess: PersistentStage | undefined;
const persistentStage = () => (persistentProcess ??= new PersistentStage());

function handleKeyRelease(header: HostToShim, body: Buffer): boolean {
  if (header.t === 'release') {
    if (mode !== 'broker' || !deviceKey) {
      send({ t: 'released', ok: false, reason: 'this enclave is not a key broker' });
      return true;
    }
    const outcome = release(body, header.requester, encryptionKey, Buffer.from(deviceKey, 'hex'));
    if (outcome.ok) send({ t: 'released', ok: true, name: outcome.name }, outcome.released);
    else send({ t: 'released', ok: false, reason: outcome.reason });
    return true;
  }
  if (header.t === 'secret') {
    if (persistentProcess) {
      // Its environment is fixed: a secret opened now would never reach the stage.
      send({ t: 'secret-refused', reason: 'the stage program has already started' });
      return true;
    }
    try {
      const { name, secret } = openReleased(body, header, encryptionKey);
      secrets.set(name, secret);
      send({ t: 'secret-opened', name });
    } catch (error) {
      send({ t: 'secret-refused', reason: (error as Error).message });
    }
    return true;
  }
  return false;
}

function boundMetadata(
  context: ExecutionContext,
  request: Buffer,
  response: Buffer,
  log: Buffer,
  exit: ShimExit,
  digests: Buffer[],
  sealed: { kid: string; digests: Buffer[] } | null,
) {
  return Buffer.from(
    canonicalJson({
      cid: context.cid,
      eid: context.eid,
      seq,
      stage: context.stage,
      backend: context.backend,
      function: context.function,
      versionDigest: context.versionDigest,
      measurement: context.measurement,
      nonce: context.nonce,
      requestBytes: request.length,
      responseBytes: response.length,
      logBytes: log.length,
      requestDigest: `sha256:${digests[0]!.toString('hex')}`,
      responseDigest: `sha256:${digests[1]!.toString('hex')}`,
      logDigest: `sha256:${digests[2]!.toString('hex')}`,
      exit,
      sealed: sealed && {
        kid: sealed.kid,
        requestPlaintextDigest: `hmac-sha256:${sealed.digests[0]!.toString('hex')}`,
        responsePlaintextDigest: `hmac-sha256:${sealed.digests[1]!.toString('hex')}`,
        logPlaintextDigest: `hmac-sha256:${sealed.digests[2]!.toString('hex')}`,
      },
    }),
  );
}

function identity(context: ExecutionContext) {
  return {
    backend: context.backend,
    hardwareProtected: context.hardwareProtected,
    function: context.function,
    versionDigest: context.versionDigest,
    cid: context.cid,
    eid: context.eid,
    stage: context.stage,
    measurement: context.measurement,
    nativeEvidenceDigest: Buffer.from(context.nativeEvidenceDigest, 'hex'),
  };
}

async function handle(header: HostToShim, body: Buffer, key: KeyObject): Promise<void> {
  if (handleKeyRelease(header, body)) return;
  if (header.t === 'release' || header.t === 'secret') return;
  if (header.t === 'start') {
    if (mode === 'persistent') persistentStage();
    send({ t: 'started', secrets: [...secrets.keys()] });
    return;
  }
  prev ??= genesisDigest(header.context.eid, rawPublicKey);
  if (header.t === 'checkpoint') {
    seq += 1;
    const evidence = signCheckpoint(
      { ...identity(header.context), seq, prev, iat: Math.floor(Date.now() / 1000) },
      key,
    );
    send({ t: 'checkpoint', seq }, evidence);
    return;
  }
  const { context } = header;
  const persistent = mode === 'persistent' ? persistentStage() : undefined;
  if (persistent?.ended) {
    send({ t: 'unavailable', exit: persistent.ended });
    return;
  }
  // A sealed request is opened here, inside the enclave; one that cannot be is refused (and signed so).
  let opened: OpenedRequest | undefined;
  let refused: ShimExit | undefined;
  try {
    const envelope = parseSealedRequest(body);
    if (envelope) opened = openRequest(body, envelope, encryptionKey);
  } catch (error) {
    if (!(error instanceof SealError)) throw error;
    refused = { code: null, signal: null, reason: 'refused', detail: error.message, refusal: error.code };
  }
  const input = opened ? opened.plaintext : body;
  const ran = refused
    ? { response: Buffer.alloc(0), log: Buffer.alloc(0), exit: refused }
    : persistent
      ? await persistent.run(input, header.maxResponseBytes)
      : await runOneshot(input, header.maxResponseBytes);
  let result = ran;
  let sealed: { kid: string; digests: Buffer[] } | null = null;
  if (opened) {
    const digest = (bytes: Buffer) => plaintextDigest(opened.digestKey, bytes);
    const log = ran.log.subarray(0, SEALED_LOG_CAP);
    sealed = { kid: opened.kid, digests: [digest(opened.plaintext), digest(ran.response), digest(log)] };
    result = { ...ran, ...sealReplies(ran.response, log, opened.responseKey, opened.requestDigest) };
  }
  seq += 1;
  // Reported to the host beside the result (two clock reads), so that benchmarks can show the evidence
  // apart from the rest of an execution; the host cannot time work done inside the enclave itself.
  const evidenceStart = performance.now();
  const digests = [sha256(body), sha256(result.response), sha256(result.log)];
  const metadata = boundMetadata(context, body, result.response, result.log, result.exit, digests, sealed);
  const evidence = signExecution(
    {
      ...identity(context),
      seq,
      prev,
      nonce: context.nonce ? Buffer.from(context.nonce, 'hex') : undefined,
      requestDigest: digests[0]!,
      responseDigest: digests[1]!,
      logDigest: digests[2]!,
      metadataDigest: sha256(metadata),
      ...(sealed
        ? { sealed: { request: sealed.digests[0]!, response: sealed.digests[1]!, log: sealed.digests[2]! } }
        : {}),
      iat: Math.floor(Date.now() / 1000),
    },
    key,
  );
  prev = sha256(evidence);
  const evidenceMs = performance.now() - evidenceStart;
  send(
    {
      t: 'result',
      seq,
      exit: result.exit,
      evidenceMs,
      lengths: [result.response.length, result.log.length, metadata.length, evidence.length],
    },
    Buffer.concat([result.response, result.log, metadata, evidence]),
  );
}

const reader = new FrameReader(MAX_FRAME);
let queue: Promise<void> = Promise.resolve();
process.stdin.on('data', (chunk: Buffer) => {
  let frames;
  try {
    frames = reader.push(chunk);
  } catch (error) {
    send({ t: 'fatal', message: (error as Error).message });
    process.exit(2);
  }
  for (const { header, body } of frames) {
    queue = queue
      .then(() => handle(header as HostToShim, body, privateKey))
      .catch((error: Error) => {
        send({ t: 'fatal', message: error.message });
        process.exit(2);
      });
  }
});
process.stdin.on('end', () => void queue.then(() => process.exit(0)));
send({
  t: 'hello',
  publicKey: rawPublicKey.toString('hex'),
  encryptionKey: encryptionKey.publicKey.toString('hex'),
});
