import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { z } from 'zod';
import { registerEvidenceFormat } from '../../runtime/evidence/formats.ts';
import { canonicalJson } from '../../runtime/util/canonical-json.ts';
import type { AdapterConfig } from '../index.ts';
import {
  BackendUnavailableError,
  type EnclaveHandle,
  type Measurement,
  type StageExit,
  type StageImage,
  type StageResult,
  type StageRun,
  type TeeAdapter,
} from '../types.ts';
import { AgentClient, AgentUnavailableError, describeTeec, STATUS, TEEC } from './agent-client.ts';
import {
  OPTEE_ANCHOR_KIND,
  OPTEE_CONTEXT_FORMAT,
  OPTEE_EVIDENCE_FORMAT,
  OPTEE_NATIVE_FORMAT,
  opteeAnchorSchema,
  opteeEvidenceVerifier,
  type OpteeAnchor,
} from './evidence.ts';

registerEvidenceFormat(opteeEvidenceVerifier);

/** The EBCC attestation TA, present on every provisioned board. */
export const ATTEST_TA_UUID = '5f1a0c3e-7b2d-4e8a-9c61-0e2b8d4a7f10';
const CMD_RUN = 0;
const CMD_PUBKEY = 0;
const EVIDENCE_BYTES = 4 + 64;
const TA_FILE = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.ta$/;

const envSchema = z.object({
  /** The board agent's stream: the Unix socket QEMU serves for the board's virtio-serial port. */
  EBCC_OPTEE_AGENT: z.string().min(1).optional(),
  /** A name for the board in provisioning records. */
  EBCC_OPTEE_BOARD: z.string().min(1).max(128).default('optee-board'),
});

interface Session {
  session: number;
  uuid: string;
  attestationKey: string;
}

/** The UUID a stage's image names: its entry is `<uuid>.ta`, the signed TA image. */
function taUuidOf(stage: StageImage): string {
  const match = TA_FILE.exec(basename(stage.image.entry));
  // Not a TA: this backend cannot run it (deploy records why; creating an enclave for it is refused).
  if (stage.image.kind !== 'executable' || !match)
    throw new BackendUnavailableError(
      'optee',
      `an OP-TEE stage's image is {"kind": "executable", "entry": ".../<uuid>.ta"} (a signed TA); got ${stage.image.kind} ${stage.image.entry}`,
    );
  return match[1]!;
}

async function measureTa(stage: StageImage): Promise<Measurement> {
  taUuidOf(stage);
  const bytes = await readFile(join(stage.rootDir, stage.image.entry));
  return { alg: 'sha256', value: createHash('sha256').update(bytes).digest('hex') };
}

/**
 * The OP-TEE backend: each enclave is a session with a Trusted Application on a board, reached through
 * the board agent (docs/optee-agent-protocol.md). A stage is a TA named by its UUID; its measurement is
 * the SHA-256 of the signed `.ta` image (which OP-TEE verifies when it loads it); persistent stages keep
 * their session, oneshot stages open one per request (the runtime makes an enclave per request).
 * Without a reachable board it refuses with "backend unavailable" and never falls back to another backend.
 */
export function createOpteeAdapter(config: AdapterConfig): TeeAdapter {
  const env = envSchema.parse(process.env);
  let client: AgentClient | undefined;
  let ready: Promise<string> | undefined;
  const installed = new Map<string, string>();
  const sessions = new Map<number, Session>();
  const limits = new Map<number, { maxResponseBytes: number; timeoutMs: number }>();
  const anchorPath = join(config.dataDir, 'optee', 'attestation-keys.json');

  const unavailable = (why: string) =>
    new BackendUnavailableError('optee', `backend "optee" is unavailable: ${why}`);

  function loadAnchor(): OpteeAnchor | undefined {
    if (!existsSync(anchorPath)) return undefined;
    return opteeAnchorSchema.parse(JSON.parse(readFileSync(anchorPath, 'utf8')));
  }

  /** Records the board's attestation key (its public half only), keeping the ones recorded before. */
  function record(publicKey: string): void {
    const anchor = loadAnchor() ?? { kind: OPTEE_ANCHOR_KIND, keys: [] };
    if (anchor.keys.some((k) => k.publicKey === publicKey)) return;
    anchor.keys.push({ publicKey, board: env.EBCC_OPTEE_BOARD, provisionedAt: new Date().toISOString() });
    mkdirSync(dirname(anchorPath), { recursive: true, mode: 0o700 });
    const staging = `${anchorPath}.tmp-${process.pid}`;
    writeFileSync(staging, `${JSON.stringify(anchor, null, 2)}\n`, { mode: 0o644 });
    renameSync(staging, anchorPath);
  }

  /** Connects, greets the agent and provisions: asks the attestation TA for its public key. */
  async function provision(agent: AgentClient): Promise<string> {
    const hello = await agent.hello();
    if (hello.implId !== 1) throw unavailable(`the board's TEE is not OP-TEE (impl ${hello.implId})`);
    if (!hello.supplicant) throw unavailable('tee-supplicant is not running on the board');
    const opened = await agent.open(ATTEST_TA_UUID);
    if (opened.status !== STATUS.ok)
      throw unavailable(
        `the attestation TA cannot be opened: ${opened.payload.toString() || describeTeec(opened.ret, opened.origin)}`,
      );
    const session = opened.payload.readUInt32BE(0);
    try {
      const got = await agent.invoke(session, CMD_PUBKEY, [Buffer.alloc(0), Buffer.alloc(0)], [65, 0]);
      if (!('out' in got) || got.ret !== 0 || got.out[0].length !== 65)
        throw unavailable('the attestation TA did not give its public key');
      const key = got.out[0].toString('hex');
      record(key);
      return key;
    } finally {
      await agent.close(session).catch(() => undefined);
    }
  }

  async function board(): Promise<{ agent: AgentClient; attestationKey: string }> {
    if (!env.EBCC_OPTEE_AGENT) throw unavailable('no OP-TEE board is configured (EBCC_OPTEE_AGENT)');
    if (!client) client = new AgentClient(env.EBCC_OPTEE_AGENT);
    const agent = client;
    if (!ready) {
      ready = provision(agent);
      ready.catch(() => {
        ready = undefined;
        installed.clear();
      });
    }
    try {
      return { agent, attestationKey: await ready };
    } catch (error) {
      if (error instanceof AgentUnavailableError) throw unavailable(error.message);
      throw error;
    }
  }

  /** Puts the stage's signed TA on the board (once per image and board connection). */
  async function install(agent: AgentClient, stage: StageImage, uuid: string, digest: string): Promise<void> {
    if (installed.get(uuid) === digest) return;
    await agent.install(uuid, await readFile(join(stage.rootDir, stage.image.entry)));
    installed.set(uuid, digest);
  }

  /** Any failure to talk to the agent means the board is gone: the next use reconnects and re-provisions. */
  function lost(error: unknown): never {
    if (error instanceof AgentUnavailableError) {
      ready = undefined;
      installed.clear();
      throw unavailable(error.message);
    }
    throw error;
  }

  const failed = (reason: StageExit['reason'], detail: string, code: number | null = null): StageResult => ({
    response: new Uint8Array(0),
    log: Buffer.from(`${detail}\n`),
    exit: { code, signal: null, reason, detail },
  });

  return {
    backend: 'optee',
    async probe() {
      try {
        await board();
        return {
          available: true,
          hardwareProtected: false,
          detail: 'OP-TEE board agent reachable (emulated board: see docs/backends.md)',
        };
      } catch (error) {
        return { available: false, hardwareProtected: false, detail: (error as Error).message };
      }
    },
    async measure(stage) {
      const measurement = await measureTa(stage);
      // Deploy installs the TA when the board is up; `create` installs it otherwise.
      try {
        const { agent } = await board();
        await install(agent, stage, taUuidOf(stage), measurement.value);
      } catch {
        // The measurement does not depend on the board.
      }
      return measurement;
    },
    trustAnchor: () => loadAnchor(),
    async create(stage, identity) {
      const uuid = taUuidOf(stage);
      const measurement = await measureTa(stage);
      const { agent, attestationKey } = await board();
      let opened;
      try {
        await install(agent, stage, uuid, measurement.value);
        opened = await agent.open(uuid);
      } catch (error) {
        lost(error);
      }
      if (opened.status === STATUS.agent) {
        const message = opened.payload.toString();
        if (/tee-supplicant/.test(message)) {
          ready = undefined;
          throw unavailable(`${message} on the board`);
        }
        throw new Error(`the board agent refused to open TA ${uuid}: ${message}`);
      }
      if (opened.status !== STATUS.ok) {
        const unknown = opened.ret === TEEC.itemNotFound;
        throw new Error(
          unknown
            ? `TA ${uuid} is not on the board (unknown UUID): ${describeTeec(opened.ret, opened.origin)}`
            : `OP-TEE refused to open TA ${uuid}: ${describeTeec(opened.ret, opened.origin)}`,
        );
      }
      const session = opened.payload.readUInt32BE(0);
      sessions.set(identity.eid, { session, uuid, attestationKey });
      limits.set(identity.eid, {
        maxResponseBytes: stage.limits.maxResponseBytes,
        timeoutMs: stage.limits.timeoutMs,
      });
      const native = {
        format: OPTEE_NATIVE_FORMAT,
        taUuid: uuid,
        attestationKey,
        board: env.EBCC_OPTEE_BOARD,
      };
      const handle: EnclaveHandle = {
        ...identity,
        stage: stage.name,
        backend: 'optee',
        measurement,
        native: { format: OPTEE_NATIVE_FORMAT, bytes: Buffer.from(canonicalJson(native)) },
      };
      return handle;
    },
    async attest() {
      throw new Error("OP-TEE enclaves are attested at create (their evidence key is the attestation TA's)");
    },
    async run(handle: EnclaveHandle, run: StageRun): Promise<StageResult> {
      const s = sessions.get(handle.eid);
      if (!s) return failed('unavailable', `OP-TEE session of enclave ${handle.eid} does not exist`);
      if (!run.evidence)
        throw new Error('OP-TEE stages sign every execution: the evidence context is required');
      const context = Buffer.from(
        canonicalJson({
          format: OPTEE_CONTEXT_FORMAT,
          backend: 'optee',
          function: run.evidence.function,
          versionDigest: run.evidence.versionDigest,
          cid: handle.cid,
          eid: handle.eid,
          stage: handle.stage,
          seq: run.seq,
          taUuid: s.uuid,
          measurement: handle.measurement,
          nonce: run.evidence.nonce ? Buffer.from(run.evidence.nonce).toString('hex') : null,
          attestationKey: s.attestationKey,
        }),
      );
      const { maxResponseBytes: limit, timeoutMs } = limits.get(handle.eid)!;
      let got;
      try {
        got = await client!.invoke(
          s.session,
          CMD_RUN,
          [run.request, createHash('sha256').update(context).digest()],
          [limit, EVIDENCE_BYTES],
          // The emulated board is slow: the stage's own time limit, plus what its signatures cost there.
          timeoutMs + 30_000,
        );
      } catch (error) {
        if (error instanceof AgentUnavailableError) {
          ready = undefined;
          installed.clear();
          return failed('crashed', `the OP-TEE board agent was lost during the request: ${error.message}`);
        }
        throw error;
      }
      if (!('out' in got)) {
        const message = got.payload.toString();
        if (got.ret === TEEC.itemNotFound) return failed('unavailable', `OP-TEE session lost: ${message}`);
        return failed('crashed', `the board agent refused the request: ${message}`);
      }
      const teec = describeTeec(got.ret, got.origin);
      if (got.ret === TEEC.shortBuffer && got.sizes[0] > limit)
        return failed('output', `TA ${s.uuid} answered ${got.sizes[0]} bytes; the limit is ${limit}`);
      if (got.ret === TEEC.targetDead) {
        sessions.delete(handle.eid);
        return failed('crashed', `TA ${s.uuid} panicked: ${teec}`);
      }
      if (got.ret !== 0) return failed('exit', `TA ${s.uuid} returned ${teec}`, got.ret);
      const [response, signed] = got.out;
      if (signed.length !== EVIDENCE_BYTES)
        return failed('crashed', `TA ${s.uuid} returned no evidence (${signed.length} bytes)`);
      const evidence = {
        format: OPTEE_EVIDENCE_FORMAT,
        taUuid: s.uuid,
        seq: signed.readUInt32BE(0),
        signature: signed.subarray(4).toString('hex'),
        attestationKey: s.attestationKey,
      };
      return {
        response,
        log: new Uint8Array(0),
        exit: { code: 0, signal: null, reason: 'exit' },
        evidence: Buffer.from(canonicalJson(evidence)),
        boundMetadata: context,
      };
    },
    async destroy(handle) {
      const s = sessions.get(handle.eid);
      sessions.delete(handle.eid);
      limits.delete(handle.eid);
      if (s && client) await client.close(s.session).catch(() => undefined);
      return {};
    },
  };
}
