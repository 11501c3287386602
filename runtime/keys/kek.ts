import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  linkSync,
  mkdirSync,
  readFileSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname } from 'node:path';

/**
 * The key-encryption key (KEK): it wraps every tenant data key (DEK) and is the one secret the operator
 * configures. The default provider keeps it in a file; an external KMS (Vault transit, AWS KMS, a
 * Trustee KBS) takes its place by implementing this interface, so that the KEK never enters this
 * process at all: `wrap` and `unwrap` become calls to the KMS. See docs/security.md.
 */
export interface KeyEncryptionKeyProvider {
  /** A stable, non-secret name of the KEK, recorded with every DEK it wraps (e.g. `file:<fingerprint>`). */
  readonly id: string;
  /** Encrypts a DEK; `context` is bound as associated data and must be given again to unwrap. */
  wrap(dek: Buffer, context: string): Promise<Buffer>;
  /** Decrypts a wrapped DEK; throws `KekError` if the KEK or the context does not match. */
  unwrap(wrapped: Buffer, context: string): Promise<Buffer>;
}

export class KekError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KekError';
  }
}

const KEK_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** Wrapped form: version byte, IV, AES-256-GCM ciphertext, tag. */
const WRAP_VERSION = 1;

/** AES-256-GCM key wrapping with a local 32-byte key. */
export class FileKekProvider implements KeyEncryptionKeyProvider {
  readonly id: string;
  private readonly key: Buffer;

  private constructor(key: Buffer) {
    this.key = key;
    this.id = `file:${createHash('sha256').update('ebcc-kek-id/1').update(key).digest('hex').slice(0, 16)}`;
  }

  /**
   * Loads the KEK file, creating it (32 random bytes, mode 0600, in a 0700 directory) when `create` is
   * true and it does not exist. A file that is not exactly 32 bytes, or that others may read, is refused.
   */
  static open(path: string, { create }: { create: boolean }): FileKekProvider {
    if (!existsSync(path)) {
      if (!create) throw new KekError(`the key-encryption key ${path} does not exist`);
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      chmodSync(dirname(path), 0o700);
      // Written whole under another name, then linked into place: two processes starting at once
      // agree on one key, and neither reads a half-written file.
      const temp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}`;
      writeFileSync(temp, randomBytes(KEK_BYTES), { mode: 0o600, flag: 'wx' });
      try {
        linkSync(temp, path);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      } finally {
        unlinkSync(temp);
      }
    }
    const mode = statSync(path).mode & 0o777;
    if (mode & 0o077)
      throw new KekError(
        `the key-encryption key ${path} has mode ${mode.toString(8)}: it must be readable by its owner only (chmod 600)`,
      );
    const key = readFileSync(path);
    if (key.length !== KEK_BYTES)
      throw new KekError(
        `the key-encryption key ${path} must hold exactly ${KEK_BYTES} bytes, not ${key.length}`,
      );
    return new FileKekProvider(key);
  }

  wrap(dek: Buffer, context: string): Promise<Buffer> {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(Buffer.from(context));
    const body = Buffer.concat([cipher.update(dek), cipher.final()]);
    return Promise.resolve(Buffer.concat([Buffer.of(WRAP_VERSION), iv, body, cipher.getAuthTag()]));
  }

  unwrap(wrapped: Buffer, context: string): Promise<Buffer> {
    if (wrapped.length < 1 + IV_BYTES + TAG_BYTES || wrapped[0] !== WRAP_VERSION)
      return Promise.reject(new KekError('not a wrapped data key'));
    const iv = wrapped.subarray(1, 1 + IV_BYTES);
    const tag = wrapped.subarray(wrapped.length - TAG_BYTES);
    const decipher = createDecipheriv('aes-256-gcm', this.key, iv);
    decipher.setAAD(Buffer.from(context));
    decipher.setAuthTag(tag);
    try {
      return Promise.resolve(
        Buffer.concat([
          decipher.update(wrapped.subarray(1 + IV_BYTES, wrapped.length - TAG_BYTES)),
          decipher.final(),
        ]),
      );
    } catch {
      return Promise.reject(
        new KekError(`the data key does not open with ${this.id} (wrong KEK or context)`),
      );
    }
  }
}
