/**
 * The sealed wire format (docs/security.md, "Sealed requests and responses"). A client seals a stage
 * input to an enclave's attested X25519 key with HPKE and names a fresh response key; the enclave opens
 * it, runs the stage on the plaintext, and seals the stage's output (and its log) to that response key.
 * Everything between the two ends (gateway, anchor, database) handles only these envelopes.
 *
 * Envelopes are JSON (media type `application/vnd.ebcc.sealed+json`), byte strings base64url:
 *
 *   request:  { format: "ebcc-sealed-request/1", suite, kid, responseKey, public?, enc, ct }
 *   response: { format: "ebcc-sealed-response/1", suite, request, enc, seq: 0, ct }
 *   log:      { format: "ebcc-sealed-log/1",      suite, request, enc, seq: 1, ct }
 *
 * `kid` names the enclave key (hex of the first 16 bytes of SHA-256 over it); `public` holds the fields
 * the function's manifest lets the anchor read, which the enclave checks against the plaintext; `request`
 * in a reply is the SHA-256 (hex) of the request envelope's bytes, so a reply cannot be moved to another
 * request. The response and the log are the messages 0 and 1 of one HPKE context to the response key
 * (one encapsulation per invocation). The AAD of each envelope is the canonical JSON of all its fields
 * but `enc` and `ct`.
 *
 * This module is bundled into the sim shim, so it imports only node:crypto and small local helpers.
 */
import { createHash, createHmac, hash as cryptoHash } from 'node:crypto';
import { canonicalJson } from '../util/canonical-json.ts';
import {
  generateX25519,
  HpkeError,
  setupRecipient,
  setupSender,
  SUITE_NAME,
  type X25519KeyPair,
} from './hpke.ts';

export const SEALED_CONTENT_TYPE = 'application/vnd.ebcc.sealed+json';
export const REQUEST_FORMAT = 'ebcc-sealed-request/1';
export const RESPONSE_FORMAT = 'ebcc-sealed-response/1';
export const LOG_FORMAT = 'ebcc-sealed-log/1';
export type ReplyFormat = typeof RESPONSE_FORMAT | typeof LOG_FORMAT;

const REQUEST_INFO = Buffer.from('ebcc-seal/1 request');
const REPLY_INFO = Buffer.from('ebcc-seal/1 reply');
/** Which message of the reply context each reply is. */
const REPLY_SEQ = { [RESPONSE_FORMAT]: 0, [LOG_FORMAT]: 1 } as const;
/** Exporter context of the key that makes the plaintext digests (keyed, so the host cannot test guesses). */
const DIGEST_KEY_CONTEXT = Buffer.from('ebcc-seal/1 plaintext digests');

export class SealError extends Error {
  constructor(
    /** `key-unknown`: sealed to a key this enclave does not hold; `invalid`: anything else. */
    readonly code: 'key-unknown' | 'invalid',
    message: string,
  ) {
    super(message);
    this.name = 'SealError';
  }
}

export interface SealedRequest {
  format: typeof REQUEST_FORMAT;
  suite: string;
  kid: string;
  responseKey: string;
  public?: Record<string, unknown>;
  enc: string;
  ct: string;
}

export interface SealedReply {
  format: ReplyFormat;
  suite: string;
  request: string;
  enc: string;
  seq: number;
  ct: string;
}

const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64url');
const B64URL = /^[A-Za-z0-9_-]*$/;
// One-shot hashing (node:crypto `hash`, Node ≥ 20.12) makes no Hash object; older Nodes take the long way.
const sha256: (bytes: Uint8Array) => Buffer =
  typeof cryptoHash === 'function'
    ? (bytes) => cryptoHash('sha256', bytes, 'buffer')
    : (bytes) => createHash('sha256').update(bytes).digest();

/** The `kid` of an enclave encryption key. */
export function encryptionKeyId(rawPublicKey: Uint8Array): string {
  return sha256(rawPublicKey).subarray(0, 16).toString('hex');
}

/** An enclave's own kid, computed once per key pair (every sealed request is checked against it). */
const ownKids = new WeakMap<X25519KeyPair, string>();
function ownKid(key: X25519KeyPair): string {
  let kid = ownKids.get(key);
  if (kid === undefined) ownKids.set(key, (kid = encryptionKeyId(key.publicKey)));
  return kid;
}

/** The byte fields of a parsed request, decoded once by the parser that checked them. */
const decodedFields = new WeakMap<SealedRequest, { enc: Buffer; ct: Buffer; responseKey: Buffer }>();

/** HMAC-SHA256 of plaintext bytes under the exchange's digest key: what evidence binds for plaintexts. */
export function plaintextDigest(digestKey: Uint8Array, bytes: Uint8Array): Buffer {
  return createHmac('sha256', digestKey).update(bytes).digest();
}

function fromB64(field: string, value: unknown, length?: number): Buffer {
  if (typeof value !== 'string' || !B64URL.test(value))
    throw new SealError('invalid', `${field} is not base64url`);
  const bytes = Buffer.from(value, 'base64url');
  if (length !== undefined && bytes.length !== length)
    throw new SealError('invalid', `${field} is ${bytes.length} bytes, not ${length}`);
  return bytes;
}

function requestAad(env: SealedRequest): Buffer {
  return Buffer.from(
    canonicalJson({
      format: env.format,
      suite: env.suite,
      kid: env.kid,
      responseKey: env.responseKey,
      public: env.public ?? null,
    }),
  );
}

function replyAad(env: SealedReply): Buffer {
  return Buffer.from(
    canonicalJson({ format: env.format, suite: env.suite, request: env.request, seq: env.seq }),
  );
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The sealed request in `bytes`, or undefined when `bytes` is not one (plain input). Throws SealError
 * for bytes that say they are a sealed request but are malformed.
 */
export function parseSealedRequest(bytes: Uint8Array): SealedRequest | undefined {
  // Cheap test first: a sealed request is a JSON object naming its format.
  if (bytes.length < 2 || bytes[0] !== 0x7b) return undefined;
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
  if (!text.includes(REQUEST_FORMAT)) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isObject(value) || value.format !== REQUEST_FORMAT) return undefined;
  const allowed = new Set(['format', 'suite', 'kid', 'responseKey', 'public', 'enc', 'ct']);
  const extra = Object.keys(value).filter((k) => !allowed.has(k));
  if (extra.length)
    throw new SealError('invalid', `unknown field(s) in the sealed request: ${extra.join(', ')}`);
  if (value.suite !== SUITE_NAME)
    throw new SealError(
      'invalid',
      `suite ${JSON.stringify(value.suite)} is not supported (only ${SUITE_NAME})`,
    );
  if (typeof value.kid !== 'string' || !/^[0-9a-f]{32}$/.test(value.kid))
    throw new SealError('invalid', 'kid must be 16 bytes of lower-case hex');
  const responseKey = fromB64('responseKey', value.responseKey, 32);
  const enc = fromB64('enc', value.enc, 32);
  const ct = fromB64('ct', value.ct);
  if (value.public !== undefined && !isObject(value.public))
    throw new SealError('invalid', 'public must be an object of the fields the anchor may read');
  const request = value as unknown as SealedRequest;
  decodedFields.set(request, { enc, ct, responseKey });
  return request;
}

export function parseSealedReply(bytes: Uint8Array, format: ReplyFormat): SealedReply {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw new SealError('invalid', `not a sealed reply (${format}): not JSON`);
  }
  if (!isObject(value) || value.format !== format)
    throw new SealError('invalid', `not a sealed reply of format ${format}`);
  if (value.suite !== SUITE_NAME)
    throw new SealError('invalid', `suite ${JSON.stringify(value.suite)} is not supported`);
  if (typeof value.request !== 'string' || !/^[0-9a-f]{64}$/.test(value.request))
    throw new SealError('invalid', 'request must be a SHA-256 in hex');
  if (value.seq !== REPLY_SEQ[format])
    throw new SealError('invalid', `a ${format} is message ${REPLY_SEQ[format]}`);
  fromB64('enc', value.enc, 32);
  fromB64('ct', value.ct);
  return value as unknown as SealedReply;
}

/** What the client keeps to open the replies to one sealed request. */
export interface ClientExchange {
  /** The request envelope as sent. */
  envelope: Buffer;
  /** SHA-256 of `envelope`. */
  requestDigest: Buffer;
  responseKey: X25519KeyPair;
  digestKey: Buffer;
  /** HMAC of the plaintext input under `digestKey`: what the enclave's evidence must bind. */
  plaintextDigest: Buffer;
}

/** Client side: seals `plaintext` to an enclave key, with a fresh response key. */
export function sealRequest(
  enclaveKey: Uint8Array,
  plaintext: Uint8Array,
  options: { public?: Record<string, unknown> } = {},
): ClientExchange {
  const responseKey = generateX25519();
  const { enc, context } = setupSender(enclaveKey, { info: REQUEST_INFO });
  const head: SealedRequest = {
    format: REQUEST_FORMAT,
    suite: SUITE_NAME,
    kid: encryptionKeyId(enclaveKey),
    responseKey: b64(responseKey.publicKey),
    ...(options.public ? { public: options.public } : {}),
    enc: b64(enc),
    ct: '',
  };
  head.ct = b64(context.seal(plaintext, requestAad(head)));
  const envelope = Buffer.from(JSON.stringify(head));
  const digestKey = context.export(DIGEST_KEY_CONTEXT, 32);
  return {
    envelope,
    requestDigest: sha256(envelope),
    responseKey,
    digestKey,
    plaintextDigest: plaintextDigest(digestKey, plaintext),
  };
}

/** What the enclave learns from a sealed request it opened. */
export interface OpenedRequest {
  plaintext: Buffer;
  responseKey: Buffer;
  digestKey: Buffer;
  requestDigest: Buffer;
  kid: string;
  public?: Record<string, unknown>;
}

/** Enclave side: opens a sealed request with the enclave's key pair; checks the public fields match. */
export function openRequest(bytes: Uint8Array, env: SealedRequest, key: X25519KeyPair): OpenedRequest {
  const kid = ownKid(key);
  if (env.kid !== kid)
    throw new SealError(
      'key-unknown',
      `the request is sealed to key ${env.kid}; this enclave holds key ${kid}`,
    );
  // An envelope that did not come from parseSealedRequest is checked and decoded here.
  const fields = decodedFields.get(env) ?? {
    enc: fromB64('enc', env.enc, 32),
    ct: fromB64('ct', env.ct),
    responseKey: fromB64('responseKey', env.responseKey, 32),
  };
  let plaintext: Buffer;
  let digestKey: Buffer;
  try {
    const context = setupRecipient(fields.enc, key, { info: REQUEST_INFO });
    plaintext = context.open(fields.ct, requestAad(env));
    digestKey = context.export(DIGEST_KEY_CONTEXT, 32);
  } catch (error) {
    if (error instanceof HpkeError)
      throw new SealError('invalid', `the sealed request does not open: ${error.message}`);
    throw error;
  }
  if (env.public) checkPublicFields(env.public, plaintext);
  return {
    plaintext,
    responseKey: fields.responseKey,
    digestKey,
    requestDigest: sha256(bytes),
    kid,
    ...(env.public ? { public: env.public } : {}),
  };
}

/** Each public field must equal the same field of the sealed (JSON object) plaintext. */
function checkPublicFields(fields: Record<string, unknown>, plaintext: Buffer): void {
  let value: unknown;
  try {
    value = JSON.parse(plaintext.toString('utf8'));
  } catch {
    throw new SealError('invalid', 'the request has public fields, but its sealed plaintext is not JSON');
  }
  if (!isObject(value))
    throw new SealError('invalid', 'the request has public fields, but its plaintext is not an object');
  for (const [name, shown] of Object.entries(fields)) {
    if (!(name in value) || canonicalJson(value[name]) !== canonicalJson(shown))
      throw new SealError('invalid', `public field "${name}" differs from the sealed request`);
  }
}

/**
 * Enclave side: seals the stage's output and its log to the client's response key, as messages 0 and
 * 1 of one HPKE context.
 */
export function sealReplies(
  response: Uint8Array,
  log: Uint8Array,
  responseKey: Uint8Array,
  requestDigest: Uint8Array,
): { response: Buffer; log: Buffer } {
  const { enc, context } = setupSender(responseKey, { info: REPLY_INFO });
  const seal = (format: ReplyFormat, plaintext: Uint8Array) => {
    const head: SealedReply = {
      format,
      suite: SUITE_NAME,
      request: Buffer.from(requestDigest).toString('hex'),
      enc: b64(enc),
      seq: REPLY_SEQ[format],
      ct: '',
    };
    head.ct = b64(context.seal(plaintext, replyAad(head)));
    return Buffer.from(JSON.stringify(head));
  };
  return { response: seal(RESPONSE_FORMAT, response), log: seal(LOG_FORMAT, log) };
}

/** Client side: opens a reply to its request; refuses one made for another request. */
export function openReply(
  bytes: Uint8Array,
  exchange: ClientExchange,
  format: ReplyFormat = RESPONSE_FORMAT,
): Buffer {
  const env = parseSealedReply(bytes, format);
  if (env.request !== exchange.requestDigest.toString('hex'))
    throw new SealError('invalid', 'the reply answers another request');
  try {
    const context = setupRecipient(fromB64('enc', env.enc, 32), exchange.responseKey, { info: REPLY_INFO });
    return context.open(fromB64('ct', env.ct), replyAad(env), env.seq);
  } catch (error) {
    if (error instanceof HpkeError)
      throw new SealError('invalid', `the sealed reply does not open: ${error.message}`);
    throw error;
  }
}
