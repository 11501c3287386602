import type { KeyObject } from 'node:crypto';
import { genesisDigest } from './binding.ts';

export { genesisDigest };
import { asInteger, decodeCbor, encodeDeterministic, encodeIntKeyMap, type CborValue } from './cbor.ts';
import { coseSign1, decodeCoseSign1, verifyCoseSign1 } from './cose.ts';
import { EvidenceFormatError, EvidenceInputError } from './errors.ts';
import { ed25519PublicKey, keyId, rawPublicKey, sha256, ueidFor } from './keys.ts';

/** The EAT profile of per-execution evidence (RFC 9711 section 6). */
export const EAT_PROFILE = 'urn:ebcc:eat:stage-execution:1';
/**
 * CoAP content-format of each `measurements` entry: 65024 lies in the experimental range (65000-65535)
 * of the CoAP Content-Formats registry; its content is CBOR `[alg: tstr, value: bstr]`.
 */
export const MEASUREMENT_CONTENT_FORMAT = 65024;

/** Claim keys: registered CWT/EAT keys where they exist, private-use (< -65536) otherwise. */
export const CLAIM = {
  iat: 6,
  nonce: 10,
  ueid: 256,
  dbgstat: 263,
  profile: 265,
  measurements: 273,
  backend: -75000,
  hardwareProtected: -75001,
  function: -75002,
  versionDigest: -75003,
  cid: -75004,
  eid: -75005,
  stage: -75006,
  seq: -75007,
  prev: -75008,
  requestDigest: -75009,
  responseDigest: -75010,
  logDigest: -75011,
  metadataDigest: -75012,
  nativeEvidenceDigest: -75013,
  kind: -75014,
  /** Sealed requests only: HMAC-SHA256 of the plaintexts inside the enclave, keyed by the HPKE exchange. */
  requestPlaintextDigest: -75015,
  responsePlaintextDigest: -75016,
  logPlaintextDigest: -75017,
} as const;

/** dbgstat (RFC 9711 section 4.2.9): 0 = enabled (software enclave), 3 = disabled-permanently (hardware). */
export const DBGSTAT_ENABLED = 0;
export const DBGSTAT_DISABLED_PERMANENTLY = 3;

export type EvidenceKind = 'execution' | 'checkpoint';

export interface EvidenceMeasurement {
  alg: string;
  value: Buffer;
}

/** The decoded claims set, with readable names. */
export interface EvidenceClaims {
  profile: typeof EAT_PROFILE;
  /** Seconds since the epoch. */
  iat: number;
  nonce?: Buffer;
  /** 17 bytes: 0x01 then 16 bytes derived from the enclave key. */
  ueid: Buffer;
  dbgstat: number;
  measurement: EvidenceMeasurement;
  backend: string;
  hardwareProtected: boolean;
  function: string;
  versionDigest: string;
  cid: string;
  eid: number;
  stage: string;
  seq: number;
  prev: Buffer;
  requestDigest?: Buffer;
  responseDigest?: Buffer;
  logDigest?: Buffer;
  metadataDigest?: Buffer;
  /**
   * Present when the request was sealed: keyed digests (HMAC-SHA256 under a key exported from the
   * HPKE exchange, which only the client and the enclave hold) of the plaintext request, response and
   * log. The plain digests above then cover the sealed envelopes.
   */
  requestPlaintextDigest?: Buffer;
  responsePlaintextDigest?: Buffer;
  logPlaintextDigest?: Buffer;
  nativeEvidenceDigest: Buffer;
  kind: EvidenceKind;
}

/** What every entry of an enclave's chain states about the enclave. */
export interface EnclaveClaimsInput {
  backend: string;
  hardwareProtected: boolean;
  function: string;
  versionDigest: string;
  cid: string;
  eid: number;
  stage: string;
  /** The backend's measurement; `value` as bytes or lower-case hex. */
  measurement: { alg: string; value: Uint8Array | string };
  /** SHA-256 of the enclave's native evidence bytes (see `evidenceDigest`). */
  nativeEvidenceDigest: Uint8Array;
  /** 1 for an enclave's first entry, then +1 per entry. */
  seq: number;
  /** `genesisDigest(eid, publicKey)` for seq 1, else `evidenceDigest` of the previous entry. */
  prev: Uint8Array;
  /** Seconds since the epoch; defaults to now. */
  iat?: number;
}

/**
 * One execution. Each artifact is given either as its bytes (hashed here) or as its SHA-256 digest
 * (when the caller has hashed it already, e.g. the shim, which also puts the digests in the metadata).
 */
export interface ExecutionInput extends EnclaveClaimsInput {
  /** 8 to 64 bytes (RFC 9711 eat_nonce). */
  nonce?: Uint8Array;
  /** The exact bytes the stage received. */
  request?: Uint8Array;
  requestDigest?: Uint8Array;
  response?: Uint8Array;
  responseDigest?: Uint8Array;
  log?: Uint8Array;
  logDigest?: Uint8Array;
  /** Bound metadata: bytes fixed before the execution is persisted (the runtime: canonical JSON). */
  metadata?: Uint8Array;
  metadataDigest?: Uint8Array;
  /** For a sealed request, all three: keyed digests of the plaintexts (see EvidenceClaims). */
  sealed?: { request: Uint8Array; response: Uint8Array; log: Uint8Array };
}

export type CheckpointInput = EnclaveClaimsInput;

interface SignerInfo {
  raw: Buffer;
  kid: Buffer;
  ueid: Buffer;
}

const signerCache = new WeakMap<KeyObject, SignerInfo>();

function signerInfo(privateKey: KeyObject): SignerInfo {
  let info = signerCache.get(privateKey);
  if (!info) {
    if (privateKey.type !== 'private' || privateKey.asymmetricKeyType !== 'ed25519') {
      throw new EvidenceInputError('evidence is signed with an Ed25519 private key');
    }
    const raw = rawPublicKey(privateKey);
    info = { raw, kid: keyId(raw), ueid: ueidFor(raw) };
    signerCache.set(privateKey, info);
  }
  return info;
}

/** SHA-256 of evidence bytes (a whole COSE_Sign1, or native evidence): what `prev` and digests hold. */
export function evidenceDigest(bytes: Uint8Array): Buffer {
  return sha256(bytes);
}

function measurementBytes(value: Uint8Array | string): Buffer {
  if (typeof value !== 'string') return Buffer.from(value);
  if (!/^(?:[0-9a-f]{2})*$/.test(value))
    throw new EvidenceInputError('measurement value must be lower-case hex');
  return Buffer.from(value, 'hex');
}

function encodeMeasurement(m: EvidenceMeasurement): Buffer {
  return encodeDeterministic([m.alg, m.value]);
}

/** The claims map in canonical key order (integers: non-negative ascending, then -1, -2, ...). */
function claimsEntries(c: EvidenceClaims): [number, CborValue][] {
  const entries: [number, CborValue][] = [[CLAIM.iat, c.iat]];
  if (c.nonce) entries.push([CLAIM.nonce, c.nonce]);
  entries.push(
    [CLAIM.ueid, c.ueid],
    [CLAIM.dbgstat, c.dbgstat],
    [CLAIM.profile, c.profile],
    [CLAIM.measurements, [[MEASUREMENT_CONTENT_FORMAT, encodeMeasurement(c.measurement)]]],
    [CLAIM.backend, c.backend],
    [CLAIM.hardwareProtected, c.hardwareProtected],
    [CLAIM.function, c.function],
    [CLAIM.versionDigest, c.versionDigest],
    [CLAIM.cid, c.cid],
    [CLAIM.eid, c.eid],
    [CLAIM.stage, c.stage],
    [CLAIM.seq, c.seq],
    [CLAIM.prev, c.prev],
  );
  if (c.requestDigest) entries.push([CLAIM.requestDigest, c.requestDigest]);
  if (c.responseDigest) entries.push([CLAIM.responseDigest, c.responseDigest]);
  if (c.logDigest) entries.push([CLAIM.logDigest, c.logDigest]);
  if (c.metadataDigest) entries.push([CLAIM.metadataDigest, c.metadataDigest]);
  entries.push([CLAIM.nativeEvidenceDigest, c.nativeEvidenceDigest], [CLAIM.kind, c.kind]);
  if (c.requestPlaintextDigest) entries.push([CLAIM.requestPlaintextDigest, c.requestPlaintextDigest]);
  if (c.responsePlaintextDigest) entries.push([CLAIM.responsePlaintextDigest, c.responsePlaintextDigest]);
  if (c.logPlaintextDigest) entries.push([CLAIM.logPlaintextDigest, c.logPlaintextDigest]);
  return entries;
  entries.push([CLAIM.nativeEvidenceDigest, c.nativeEvidenceDigest], [CLAIM.kind, c.kind]);
  return entries;
}

/** Encode a claims set as deterministic CBOR (the COSE payload). */
export function encodeClaims(claims: EvidenceClaims): Buffer {
  return encodeIntKeyMap(claimsEntries(claims));
}

function baseClaims(input: EnclaveClaimsInput, info: SignerInfo, kind: EvidenceKind): EvidenceClaims {
  const uint = (name: string, v: number, min: number) => {
    if (!Number.isSafeInteger(v) || v < min)
      throw new EvidenceInputError(`${name} must be an integer >= ${min}`);
  };
  uint('eid', input.eid, 0);
  uint('seq', input.seq, 1);
  const iat = input.iat ?? Math.floor(Date.now() / 1000);
  uint('iat', iat, 0);
  if (input.prev.length !== 32) throw new EvidenceInputError('prev must be 32 bytes');
  if (input.nativeEvidenceDigest.length !== 32)
    throw new EvidenceInputError('nativeEvidenceDigest must be 32 bytes');
  return {
    profile: EAT_PROFILE,
    iat,
    ueid: info.ueid,
    dbgstat: input.hardwareProtected ? DBGSTAT_DISABLED_PERMANENTLY : DBGSTAT_ENABLED,
    measurement: { alg: input.measurement.alg, value: measurementBytes(input.measurement.value) },
    backend: input.backend,
    hardwareProtected: input.hardwareProtected,
    function: input.function,
    versionDigest: input.versionDigest,
    cid: input.cid,
    eid: input.eid,
    stage: input.stage,
    seq: input.seq,
    prev: Buffer.from(input.prev),
    nativeEvidenceDigest: Buffer.from(input.nativeEvidenceDigest),
    kind,
  };
}

function artifactDigest(name: string, bytes: Uint8Array | undefined, digest: Uint8Array | undefined): Buffer {
  if (bytes !== undefined && digest !== undefined)
    throw new EvidenceInputError(`give ${name} or ${name}Digest, not both`);
  if (bytes !== undefined) return sha256(bytes);
  if (digest === undefined) throw new EvidenceInputError(`${name} (or ${name}Digest) is required`);
  if (digest.length !== 32) throw new EvidenceInputError(`${name}Digest must be 32 bytes (SHA-256)`);
  return Buffer.from(digest);
}

/** Sign the evidence of one stage execution: a tagged COSE_Sign1 over the EAT claims set. */
export function signExecution(input: ExecutionInput, privateKey: KeyObject): Buffer {
  const info = signerInfo(privateKey);
  const claims = baseClaims(input, info, 'execution');
  if (input.nonce) {
    if (input.nonce.length < 8 || input.nonce.length > 64)
      throw new EvidenceInputError('nonce must be 8 to 64 bytes');
    claims.nonce = Buffer.from(input.nonce);
  }
  claims.requestDigest = artifactDigest('request', input.request, input.requestDigest);
  claims.responseDigest = artifactDigest('response', input.response, input.responseDigest);
  claims.logDigest = artifactDigest('log', input.log, input.logDigest);
  claims.metadataDigest = artifactDigest('metadata', input.metadata, input.metadataDigest);
  if (input.sealed) {
    for (const d of Object.values(input.sealed))
      if (d.length !== 32)
        throw new EvidenceInputError('sealed plaintext digests are 32 bytes (HMAC-SHA256)');
    claims.requestPlaintextDigest = Buffer.from(input.sealed.request);
    claims.responsePlaintextDigest = Buffer.from(input.sealed.response);
    claims.logPlaintextDigest = Buffer.from(input.sealed.log);
  }
  return coseSign1(encodeClaims(claims), privateKey, info.kid);
}

/** Sign the checkpoint that closes an enclave's chain when it is destroyed (seq = last + 1). */
export function signCheckpoint(input: CheckpointInput, privateKey: KeyObject): Buffer {
  const info = signerInfo(privateKey);
  return coseSign1(encodeClaims(baseClaims(input, info, 'checkpoint')), privateKey, info.kid);
}

function bad(message: string): never {
  throw new EvidenceFormatError('claims', message);
}

function decodeClaims(payload: Buffer): EvidenceClaims {
  const map = decodeCbor(payload, 'claims');
  if (!(map instanceof Map)) bad('the claims set is not a map');
  const byKey = new Map<number, unknown>();
  const known = new Set<number>(Object.values(CLAIM));
  for (const [label, value] of map) {
    const key = asInteger(label);
    if (key === undefined || !known.has(key)) bad(`unknown claim ${String(label)}`);
    byKey.set(key, value);
  }
  const required = (key: number, name: string): unknown => {
    if (!byKey.has(key)) bad(`missing claim ${name} (${key})`);
    return byKey.get(key);
  };
  const text = (key: number, name: string): string => {
    const v = required(key, name);
    if (typeof v !== 'string') bad(`${name} is not a text string`);
    return v;
  };
  const uint = (key: number, name: string): number => {
    const v = asInteger(required(key, name));
    if (v === undefined || v < 0) bad(`${name} is not an unsigned integer`);
    return v;
  };
  const bytes = (key: number, name: string, length?: number): Buffer => {
    const v = required(key, name);
    if (!(v instanceof Uint8Array)) bad(`${name} is not a byte string`);
    if (length !== undefined && v.length !== length) bad(`${name} is not ${length} bytes`);
    return Buffer.from(v);
  };
  const optionalBytes = (key: number, name: string, length?: number) =>
    byKey.has(key) ? bytes(key, name, length) : undefined;

  const profile = text(CLAIM.profile, 'eat_profile');
  if (profile !== EAT_PROFILE) bad(`eat_profile ${profile} is not ${EAT_PROFILE}`);
  const kind = text(CLAIM.kind, 'kind');
  if (kind !== 'execution' && kind !== 'checkpoint') bad(`kind ${kind} is neither execution nor checkpoint`);
  const hardwareProtected = required(CLAIM.hardwareProtected, 'hardware-protected');
  if (typeof hardwareProtected !== 'boolean') bad('hardware-protected is not a boolean');
  const dbgstat = uint(CLAIM.dbgstat, 'dbgstat');
  if (dbgstat !== (hardwareProtected ? DBGSTAT_DISABLED_PERMANENTLY : DBGSTAT_ENABLED)) {
    bad(`dbgstat ${dbgstat} contradicts hardware-protected ${hardwareProtected}`);
  }
  const ueid = bytes(CLAIM.ueid, 'ueid', 17);
  if (ueid[0] !== 0x01) bad('ueid is not of type RAND (0x01)');

  const measurements = required(CLAIM.measurements, 'measurements');
  if (!Array.isArray(measurements) || measurements.length !== 1)
    bad('measurements must hold exactly one entry');
  const entry: unknown = measurements[0];
  if (!Array.isArray(entry) || entry.length !== 2) bad('a measurements entry is [content-format, bytes]');
  if (asInteger(entry[0]) !== MEASUREMENT_CONTENT_FORMAT) {
    bad(`measurement content-format ${String(entry[0])} is not ${MEASUREMENT_CONTENT_FORMAT}`);
  }
  if (!(entry[1] instanceof Uint8Array)) bad('measurement content is not a byte string');
  const inner = decodeCbor(entry[1], 'measurement');
  if (
    !Array.isArray(inner) ||
    inner.length !== 2 ||
    typeof inner[0] !== 'string' ||
    !(inner[1] instanceof Uint8Array)
  ) {
    bad('measurement content is not [alg: tstr, value: bstr]');
  }

  const claims: EvidenceClaims = {
    profile: EAT_PROFILE,
    iat: uint(CLAIM.iat, 'iat'),
    ueid,
    dbgstat,
    measurement: { alg: inner[0] as string, value: Buffer.from(inner[1] as Uint8Array) },
    backend: text(CLAIM.backend, 'backend'),
    hardwareProtected,
    function: text(CLAIM.function, 'function'),
    versionDigest: text(CLAIM.versionDigest, 'version digest'),
    cid: text(CLAIM.cid, 'cid'),
    eid: uint(CLAIM.eid, 'eid'),
    stage: text(CLAIM.stage, 'stage'),
    seq: uint(CLAIM.seq, 'seq'),
    prev: bytes(CLAIM.prev, 'prev', 32),
    nativeEvidenceDigest: bytes(CLAIM.nativeEvidenceDigest, 'native evidence digest', 32),
    kind,
  };
  if (claims.seq < 1) bad('seq starts at 1');
  const nonce = optionalBytes(CLAIM.nonce, 'eat_nonce');
  if (nonce) {
    if (nonce.length < 8 || nonce.length > 64) bad('eat_nonce must be 8 to 64 bytes');
    claims.nonce = nonce;
  }
  const digests = {
    requestDigest: optionalBytes(CLAIM.requestDigest, 'request digest', 32),
    responseDigest: optionalBytes(CLAIM.responseDigest, 'response digest', 32),
    logDigest: optionalBytes(CLAIM.logDigest, 'log digest', 32),
    metadataDigest: optionalBytes(CLAIM.metadataDigest, 'metadata digest', 32),
  };
  const present = Object.values(digests).filter(Boolean).length;
  const sealed = {
    requestPlaintextDigest: optionalBytes(CLAIM.requestPlaintextDigest, 'request plaintext digest', 32),
    responsePlaintextDigest: optionalBytes(CLAIM.responsePlaintextDigest, 'response plaintext digest', 32),
    logPlaintextDigest: optionalBytes(CLAIM.logPlaintextDigest, 'log plaintext digest', 32),
  };
  const sealedPresent = Object.values(sealed).filter(Boolean).length;
  if (sealedPresent !== 0 && (sealedPresent !== 3 || kind !== 'execution'))
    bad('plaintext digests come as a set of three, in executions only');
  if (kind === 'execution') {
    if (present !== 4) bad('an execution carries request, response, log and metadata digests');
    Object.assign(claims, digests);
    if (sealedPresent) Object.assign(claims, sealed);
  } else {
    if (present !== 0) bad('a checkpoint carries no artifact digests');
    if (nonce) bad('a checkpoint carries no nonce');
  }
  if (!encodeClaims(claims).equals(payload)) {
    throw new EvidenceFormatError('non-canonical', 'the claims set is not in deterministic encoding');
  }
  return claims;
}

export interface DecodedEvidence {
  claims: EvidenceClaims;
  protected: Buffer;
  kid: Buffer;
  payload: Buffer;
  signature: Buffer;
}

/** Strictly decode evidence (COSE_Sign1 + claims); throws `EvidenceFormatError`. Does not verify. */
export function decodeEvidence(bytes: Uint8Array): DecodedEvidence {
  try {
    const message = decodeCoseSign1(bytes);
    return { ...message, claims: decodeClaims(message.payload) };
  } catch (error) {
    if (error instanceof EvidenceFormatError) throw error;
    throw new EvidenceFormatError('claims', `undecodable evidence: ${(error as Error).message}`);
  }
}

/**
 * True when the evidence decodes strictly, its kid is the key's, its ueid is derived from the key and
 * its EdDSA signature verifies. Never throws.
 */
export function verifyEvidenceSignature(bytes: Uint8Array, publicKey: Uint8Array | KeyObject): boolean {
  try {
    const raw = publicKey instanceof Uint8Array ? Buffer.from(publicKey) : rawPublicKey(publicKey);
    const decoded = decodeEvidence(bytes);
    if (!decoded.kid.equals(keyId(raw)) || !decoded.claims.ueid.equals(ueidFor(raw))) return false;
    return verifyCoseSign1(decoded, publicKey instanceof Uint8Array ? ed25519PublicKey(raw) : publicKey);
  } catch {
    return false;
  }
}

/**
 * Signs an enclave's chain in order: it holds the next seq and the digest of the last entry, so the
 * runtime (or the shim inside the enclave) cannot get continuity wrong.
 */
export class EvidenceChain {
  private nextSeq: number;
  private last: Buffer;
  private closed = false;

  constructor(
    private readonly privateKey: KeyObject,
    readonly eid: number,
    resume?: { lastSeq: number; lastEvidence: Uint8Array },
  ) {
    const info = signerInfo(privateKey);
    this.nextSeq = resume ? resume.lastSeq + 1 : 1;
    this.last = resume ? evidenceDigest(resume.lastEvidence) : genesisDigest(eid, info.raw);
  }

  get seq(): number {
    return this.nextSeq;
  }

  get prev(): Buffer {
    return this.last;
  }

  get publicKey(): Buffer {
    return signerInfo(this.privateKey).raw;
  }

  execution(input: Omit<ExecutionInput, 'seq' | 'prev' | 'eid'>): Buffer {
    this.checkOpen();
    return this.advance(
      signExecution({ ...input, eid: this.eid, seq: this.nextSeq, prev: this.last }, this.privateKey),
    );
  }

  checkpoint(input: Omit<CheckpointInput, 'seq' | 'prev' | 'eid'>): Buffer {
    this.checkOpen();
    const bytes = this.advance(
      signCheckpoint({ ...input, eid: this.eid, seq: this.nextSeq, prev: this.last }, this.privateKey),
    );
    this.closed = true;
    return bytes;
  }

  private checkOpen(): void {
    if (this.closed)
      throw new EvidenceInputError(`the chain of enclave ${this.eid} is closed by its checkpoint`);
  }

  private advance(bytes: Buffer): Buffer {
    this.nextSeq += 1;
    this.last = evidenceDigest(bytes);
    return bytes;
  }
}
