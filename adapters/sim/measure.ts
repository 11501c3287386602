import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { canonicalJson } from '../../runtime/util/canonical-json.ts';
import type { Measurement, StageImage } from '../types.ts';

/**
 * The sim backend measures like Keystone does: a SHA3-512 "enclave hash" over everything loaded into
 * the enclave. Here that is every image file (path, size, bytes, in sorted order) followed by the
 * launch configuration, so changing a byte or a limit changes the measurement.
 */
export async function measureSimStage(stage: StageImage): Promise<Measurement> {
  const hash = createHash('sha3-512');
  const files = [...new Set([stage.image.entry, ...stage.image.files])].sort();
  for (const path of files) {
    const bytes = await readFile(join(stage.rootDir, path));
    const size = Buffer.alloc(8);
    size.writeBigUInt64BE(BigInt(bytes.length));
    hash.update(`file\0${path}\0`).update(size).update(bytes);
  }
  const launch = { image: stage.image, mode: stage.mode, limits: stage.limits };
  hash.update('config\0').update(canonicalJson(launch));
  return { alg: 'sha3-512', value: hash.digest('hex') };
}
