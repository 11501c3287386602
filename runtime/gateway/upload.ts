import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import busboy from 'busboy';
import { Problem, badRequest } from '../problem.ts';

export interface SpooledUpload {
  path: string;
  size: number;
  sha256: string;
  discard(): Promise<void>;
}

const tooLarge = (max: number) =>
  new Problem(
    413,
    'bundle-too-large',
    'Content too large',
    `the bundle exceeds the upload limit of ${max} bytes`,
    { limit: max },
  );

/** Counts and hashes bytes as they pass, and fails the stream the moment the limit is crossed. */
class LimitedDigest extends Transform {
  readonly hash = createHash('sha256');
  size = 0;
  constructor(private readonly max: number) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.size += chunk.length;
    if (this.size > this.max) return done(tooLarge(this.max));
    this.hash.update(chunk);
    done(null, chunk);
  }
}

async function spool(source: Readable, dir: string, max: number): Promise<SpooledUpload> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, `upload-${randomBytes(8).toString('hex')}.tgz`);
  const meter = new LimitedDigest(max);
  const discard = () => rm(path, { force: true });
  try {
    await pipeline(source, meter, createWriteStream(path, { mode: 0o600 }));
  } catch (error) {
    await discard();
    throw error;
  }
  return { path, size: meter.size, sha256: meter.hash.digest('hex'), discard };
}

/**
 * Streams a bundle upload to a private temporary file, never holding it in memory. Takes the raw body
 * (`application/gzip` and friends) or the first file part of a `multipart/form-data` body.
 */
export async function receiveBundle(request: Request, dir: string, max: number): Promise<SpooledUpload> {
  const declared = Number(request.headers.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > max) throw tooLarge(max);
  if (!request.body) throw badRequest('bundle-missing', 'the request has no body; upload a .tar.gz bundle');
  const type = (request.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  const body = Readable.fromWeb(request.body as WebReadableStream<Uint8Array>);
  if (
    ['application/gzip', 'application/x-gzip', 'application/x-tar+gzip', 'application/octet-stream'].includes(
      type,
    )
  ) {
    return spool(body, dir, max);
  }
  if (type === 'multipart/form-data') return receiveMultipart(request, body, dir, max);
  throw new Problem(
    415,
    'unsupported-media-type',
    'Unsupported media type',
    `upload the bundle as application/gzip or multipart/form-data, not "${type || 'none'}"`,
  );
}

function receiveMultipart(
  request: Request,
  body: Readable,
  dir: string,
  max: number,
): Promise<SpooledUpload> {
  return new Promise((resolve, reject) => {
    let parser: busboy.Busboy;
    try {
      parser = busboy({
        headers: { 'content-type': request.headers.get('content-type') ?? '' },
        limits: { files: 1, fileSize: max + 1, fields: 16, parts: 17 },
      });
    } catch (error) {
      return reject(badRequest('multipart-invalid', `malformed multipart body: ${(error as Error).message}`));
    }
    let taken: Promise<SpooledUpload> | undefined;
    parser.on('file', (_field, stream) => {
      if (taken) return stream.resume();
      taken = spool(stream, dir, max);
      taken.catch(() => stream.resume());
    });
    parser.on('error', (error: Error) =>
      reject(badRequest('multipart-invalid', `malformed multipart body: ${error.message}`)),
    );
    parser.on('close', () => {
      if (!taken) return reject(badRequest('bundle-missing', 'the multipart body has no file part'));
      taken.then(resolve, reject);
    });
    body.on('error', reject);
    body.pipe(parser);
  });
}
