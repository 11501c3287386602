import { z } from 'zod';
import { bundleEnclaveSchema, toBase64 } from '../evidence/bundle.ts';
import type { EnclaveKey } from '../stages/dispatcher.ts';
import { encryptionKeyId } from './envelope.ts';
import { SUITE_NAME } from './hpke.ts';

/**
 * What `GET /v1/functions/:name/stages/:stage/key` returns: a stage enclave's encryption key with the
 * native evidence that binds it (the `enclave` object is an evidence-bundle enclave, so the same
 * verifier appraises it), and the stage's sealing policy. A client trusts the key only after
 * `appraiseEnclaveKey` (runtime/client) affirms it.
 */
export const ENCLAVE_KEY_FORMAT = 'ebcc-enclave-key/1';

export const enclaveKeyDocumentSchema = z.strictObject({
  format: z.literal(ENCLAVE_KEY_FORMAT),
  function: z.string().min(1),
  version: z.string().min(1),
  versionDigest: z.string().min(1),
  cid: z.string().min(1),
  stage: z.string().min(1),
  suite: z.literal(SUITE_NAME),
  kid: z.string().regex(/^[0-9a-f]{32}$/),
  enclave: bundleEnclaveSchema.extend({ encryptionKey: z.string().regex(/^[0-9a-f]{64}$/) }),
  sealing: z.strictObject({ required: z.boolean(), publicFields: z.array(z.string()) }),
});

export type EnclaveKeyDocument = z.output<typeof enclaveKeyDocumentSchema>;

export function enclaveKeyDocument(
  fn: { name: string; version: string; versionDigest: string },
  key: EnclaveKey,
  sealing: { required: boolean; publicFields: string[] } | undefined,
): EnclaveKeyDocument {
  const { handle, native } = key;
  return {
    format: ENCLAVE_KEY_FORMAT,
    function: fn.name,
    version: fn.version,
    versionDigest: fn.versionDigest,
    cid: key.cid,
    stage: handle.stage,
    suite: SUITE_NAME,
    kid: encryptionKeyId(handle.encryptionKey!),
    enclave: {
      eid: handle.eid,
      stage: handle.stage,
      backend: handle.backend,
      publicKey: Buffer.from(handle.publicKey!).toString('hex'),
      encryptionKey: Buffer.from(handle.encryptionKey!).toString('hex'),
      nativeFormat: native.format,
      nativeEvidence: toBase64(native.bytes),
      measurement: handle.measurement,
    },
    sealing: sealing ?? { required: false, publicFields: [] },
  };
}
