/**
 * HPKE (RFC 9180) for one suite, on node:crypto: DHKEM(X25519, HKDF-SHA256) (0x0020), HKDF-SHA256
 * (0x0001), AES-128-GCM (0x0001); base mode (0), with the secret exporter.
 *
 * Why not `@hpke/core` at run time: it goes through WebCrypto, whose every call is an asynchronous
 * thread-pool job in Node 20; one 4 KiB seal + open costs about 3.8 ms on this machine, against a
 * budget of 200 µs per invocation (docs/benchmarks.md). This file composes OpenSSL primitives
 * synchronously and is checked against the RFC's test vectors and, both ways, against `@hpke/core` with
 * `@hpke/dhkem-x25519` (test/seal-hpke.test.ts). It is bundled into the sim shim, so it imports nothing
 * but node:crypto.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createPrivateKey,
  createPublicKey,
  createSecretKey,
  diffieHellman,
  generateKeyPairSync,
  type KeyObject,
} from 'node:crypto';

export const KEM_ID = 0x0020;
export const KDF_ID = 0x0001;
export const AEAD_ID = 0x0001;
/** How the suite is named on the wire (envelopes carry it, so that a future suite is an explicit change). */
export const SUITE_NAME = 'DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-128-GCM';

const N_SECRET = 32;
const N_K = 16;
const N_N = 12;
const N_T = 16;
const N_H = 32;

export class HpkeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HpkeError';
  }
}

const utf8 = (s: string) => Buffer.from(s, 'utf8');
const i2osp = (n: number, w: number) => {
  const out = Buffer.alloc(w);
  out.writeUIntBE(n, 0, w);
  return out;
};
const KEM_SUITE = Buffer.concat([utf8('KEM'), i2osp(KEM_ID, 2)]);
const HPKE_SUITE = Buffer.concat([utf8('HPKE'), i2osp(KEM_ID, 2), i2osp(KDF_ID, 2), i2osp(AEAD_ID, 2)]);
const VERSION = utf8('HPKE-v1');
const EMPTY = Buffer.alloc(0);

function extract(salt: Uint8Array, ikm: Uint8Array): Buffer {
  return createHmac('sha256', salt.length ? salt : Buffer.alloc(N_H))
    .update(ikm)
    .digest();
}

function expand(prk: Uint8Array, info: Uint8Array, length: number): Buffer {
  const blocks: Buffer[] = [];
  let t: Buffer = EMPTY;
  for (let i = 1; blocks.length * N_H < length; i++) {
    t = createHmac('sha256', prk)
      .update(t)
      .update(info)
      .update(Buffer.from([i]))
      .digest();
    blocks.push(t);
  }
  return Buffer.concat(blocks).subarray(0, length);
}

const labeledExtract = (suite: Buffer, salt: Uint8Array, label: string, ikm: Uint8Array) =>
  extract(salt, Buffer.concat([VERSION, suite, utf8(label), ikm]));

const labeledExpand = (suite: Buffer, prk: Uint8Array, label: string, info: Uint8Array, length: number) =>
  expand(prk, Buffer.concat([i2osp(length, 2), VERSION, suite, utf8(label), info]), length);

// A raw X25519 private key as a KeyObject: PKCS#8 DER with the fixed RFC 8410 prefix.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

export function x25519PrivateKey(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw new HpkeError(`an X25519 private key is 32 bytes, not ${raw.length}`);
  return createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, raw]), format: 'der', type: 'pkcs8' });
}

// Public keys go through JWK: in Node 20 a JWK imports and exports some twenty times faster than DER
// (OpenSSL's decoder chain), and this is on every sealed invocation's path.
export function x25519PublicKey(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw new HpkeError(`an X25519 public key is 32 bytes, not ${raw.length}`);
  const x = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64url');
  return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x }, format: 'jwk' });
}

export function rawX25519Public(key: KeyObject): Buffer {
  if (key.asymmetricKeyType !== 'x25519') throw new HpkeError('not an X25519 key');
  const jwk = key.export({ format: 'jwk' });
  return Buffer.from(jwk.x!, 'base64url');
}

export function rawX25519Private(key: KeyObject): Buffer {
  if (key.type !== 'private' || key.asymmetricKeyType !== 'x25519')
    throw new HpkeError('not an X25519 private key');
  return Buffer.from(key.export({ format: 'der', type: 'pkcs8' }).subarray(-32));
}

export interface X25519KeyPair {
  privateKey: KeyObject;
  /** Raw 32 bytes. */
  publicKey: Buffer;
}

export function generateX25519(): X25519KeyPair {
  // Exported through JWK, not SPKI DER: OpenSSL's DER encoder is the slower path in Node 20.
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  return { privateKey, publicKey: rawX25519Public(publicKey) };
}

/** RFC 9180 section 7.1.3 DeriveKeyPair for X25519. */
export function deriveX25519(ikm: Uint8Array): X25519KeyPair {
  const prk = labeledExtract(KEM_SUITE, EMPTY, 'dkp_prk', ikm);
  const sk = labeledExpand(KEM_SUITE, prk, 'sk', EMPTY, 32);
  const privateKey = x25519PrivateKey(sk);
  return { privateKey, publicKey: rawX25519Public(privateKey) };
}

function dh(privateKey: KeyObject, publicKey: KeyObject): Buffer {
  // RFC 9180 section 7.1.4: an all-zero X25519 output (a small-order public key) must be rejected;
  // OpenSSL refuses it itself, and the check stays for any other provider.
  let shared: Buffer;
  try {
    shared = diffieHellman({ privateKey, publicKey });
  } catch {
    throw new HpkeError('X25519 failed: the public key is of small order');
  }
  if (shared.every((b) => b === 0)) throw new HpkeError('X25519 produced the all-zero value');
  return shared;
}

function extractAndExpand(dhValue: Buffer, kemContext: Buffer): Buffer {
  const prk = labeledExtract(KEM_SUITE, EMPTY, 'eae_prk', dhValue);
  return labeledExpand(KEM_SUITE, prk, 'shared_secret', kemContext, N_SECRET);
}

interface Schedule {
  key: KeyObject;
  baseNonce: Buffer;
  exporterSecret: Buffer;
}

// In base mode psk_id is empty, so its hash is a constant; an application uses a handful of `info`
// strings, so the key-schedule context of each is computed once (both are public values).
const PSK_ID_HASH = labeledExtract(HPKE_SUITE, EMPTY, 'psk_id_hash', EMPTY);
const scheduleContexts = new Map<string, Buffer>();
const MAX_CACHED_CONTEXTS = 64;

function scheduleContext(info: Uint8Array): Buffer {
  const id = Buffer.from(info.buffer, info.byteOffset, info.byteLength).toString('latin1');
  let context = scheduleContexts.get(id);
  if (!context) {
    context = Buffer.concat([
      Buffer.from([0]),
      PSK_ID_HASH,
      labeledExtract(HPKE_SUITE, EMPTY, 'info_hash', info),
    ]);
    if (scheduleContexts.size < MAX_CACHED_CONTEXTS) scheduleContexts.set(id, context);
  }
  return context;
}

/** RFC 9180 section 5.1, base mode: psk and psk_id are empty. */
function keySchedule(sharedSecret: Buffer, info: Uint8Array): Schedule {
  const context = scheduleContext(info);
  const secret = labeledExtract(HPKE_SUITE, sharedSecret, 'secret', EMPTY);
  return {
    // A KeyObject once per context: a raw key would be imported again by every cipher made from it.
    key: createSecretKey(labeledExpand(HPKE_SUITE, secret, 'key', context, N_K)),
    baseNonce: labeledExpand(HPKE_SUITE, secret, 'base_nonce', context, N_N),
    exporterSecret: labeledExpand(HPKE_SUITE, secret, 'exp', context, N_H),
  };
}

/** An HPKE encryption context (sender or recipient): sequence-numbered AEAD and the secret exporter. */
export class HpkeContext {
  private seq = 0;
  constructor(private readonly schedule: Schedule) {}

  private nonce(at?: number): Buffer {
    if (this.seq >= 2 ** 48) throw new HpkeError('message limit reached');
    const n = Buffer.from(this.schedule.baseNonce);
    const s = at ?? this.seq++;
    // XOR the big-endian sequence number into the low bytes (48 bits are plenty).
    for (let i = 0, v = s; i < 6; i++, v = Math.floor(v / 256)) n[N_N - 1 - i]! ^= v & 0xff;
    return n;
  }

  seal(plaintext: Uint8Array, aad: Uint8Array = EMPTY): Buffer {
    const cipher = createCipheriv('aes-128-gcm', this.schedule.key, this.nonce());
    cipher.setAAD(aad);
    return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  }

  /**
   * Opens the next message; with `at`, the message of that sequence number instead (leaving the
   * context's own count alone), for a receiver that opens the messages of one context separately.
   */
  open(ciphertext: Uint8Array, aad: Uint8Array = EMPTY, at?: number): Buffer {
    if (ciphertext.length < N_T) throw new HpkeError('the ciphertext is shorter than its tag');
    if (at !== undefined && (!Number.isSafeInteger(at) || at < 0 || at >= 2 ** 48))
      throw new HpkeError('a sequence number is an integer from 0 to 2^48 - 1');
    const nonce = this.nonce(at);
    const decipher = createDecipheriv('aes-128-gcm', this.schedule.key, nonce);
    decipher.setAAD(aad);
    decipher.setAuthTag(ciphertext.subarray(ciphertext.length - N_T));
    try {
      return Buffer.concat([
        decipher.update(ciphertext.subarray(0, ciphertext.length - N_T)),
        decipher.final(),
      ]);
    } catch {
      if (at === undefined) this.seq--;
      throw new HpkeError('the ciphertext does not open with this key, info and aad');
    }
  }

  export(exporterContext: Uint8Array, length: number): Buffer {
    return labeledExpand(HPKE_SUITE, this.schedule.exporterSecret, 'sec', exporterContext, length);
  }
}

export interface SetupOptions {
  info?: Uint8Array;
}

/** SetupBaseS: encapsulates to `recipient` (raw 32 bytes); `ephemeral` only for test vectors. */
export function setupSender(
  recipient: Uint8Array,
  options: SetupOptions & { ephemeral?: X25519KeyPair } = {},
): { enc: Buffer; context: HpkeContext } {
  const eph = options.ephemeral ?? generateX25519();
  const shared = extractAndExpand(
    dh(eph.privateKey, x25519PublicKey(recipient)),
    Buffer.concat([eph.publicKey, recipient]),
  );
  return { enc: eph.publicKey, context: new HpkeContext(keySchedule(shared, options.info ?? EMPTY)) };
}

/** SetupBaseR with the recipient's key pair. */
export function setupRecipient(
  enc: Uint8Array,
  recipient: X25519KeyPair,
  options: SetupOptions = {},
): HpkeContext {
  if (enc.length !== 32) throw new HpkeError(`enc is 32 bytes for X25519, not ${enc.length}`);
  const shared = extractAndExpand(
    dh(recipient.privateKey, x25519PublicKey(enc)),
    Buffer.concat([enc, recipient.publicKey]),
  );
  return new HpkeContext(keySchedule(shared, options.info ?? EMPTY));
}
