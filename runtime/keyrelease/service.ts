import { and, asc, eq, inArray } from 'drizzle-orm';
import {
  getAdapter,
  DEFAULT_BACKEND,
  type EnclaveHandle,
  type NativeEvidence,
  type TeeAdapter,
} from '../../adapters/index.ts';
import type { Db } from '../../db/client.ts';
import { keyReleases, sealedSecrets } from '../../db/schema.ts';
import { toBase64 } from '../evidence/bundle.ts';
import { newId } from '../ids.ts';
import { badRequest, Problem } from '../problem.ts';
import { encryptionKeyId, parseSealedRequest, SealError } from '../seal/envelope.ts';
import { SUITE_NAME } from '../seal/hpke.ts';
import { parsePolicy, type ReleasePolicy } from './release.ts';

export const KEY_BROKER_FORMAT = 'ebcc-key-broker/1';
const SECRET_NAME = /^[a-z][a-z0-9-]{0,63}$/;

/** A secret a stage's manifest declares (manifest `stages[].secrets`). */
export interface DeclaredSecret {
  name: string;
  optional: boolean;
}

/** A stage enclave that may not start: a secret it declared was refused, or is missing. */
export class SecretReleaseError extends Error {
  constructor(
    readonly stage: string,
    message: string,
  ) {
    super(message);
    this.name = 'SecretReleaseError';
  }
}

/** A freshly attested enclave that may be owed secrets. */
export interface ReadyEnclave {
  cid: string;
  handle: EnclaveHandle;
  native: NativeEvidence;
}

/**
 * Secrets released only after attestation: stores tenants' sealed secrets (ciphertext and the policy
 * they show in clear), and when an enclave of a stage starts, has the backend's key broker (an enclave)
 * decide, logs every decision with the requester's evidence, and hands a released secret, sealed to the
 * enclave's own key, to the enclave. The host relays envelopes and never holds a secret in clear.
 */
export class KeyReleaseService {
  constructor(
    private readonly db: Db,
    private readonly adapterFor: (backend: string) => TeeAdapter = getAdapter,
  ) {}

  private async broker(backend: string) {
    const adapter = this.adapterFor(backend);
    if (!adapter.keyBroker)
      throw new Problem(501, 'no-key-broker', 'Not implemented', `the ${backend} backend has no key broker`);
    return adapter.keyBroker();
  }

  /** The broker's key with the native evidence binding it: tenants verify it, then seal secrets to it. */
  async brokerKey(backend: string = DEFAULT_BACKEND) {
    const { handle, native, cid } = await this.broker(backend);
    return {
      format: KEY_BROKER_FORMAT,
      cid,
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
    };
  }

  /** Stores (or replaces) a sealed secret; its envelope must show its policy in clear as `public.policy`. */
  async upload(tenantId: string, functionId: string, name: string, envelope: Uint8Array) {
    if (!SECRET_NAME.test(name))
      throw badRequest(
        'invalid-secret-name',
        'a secret name is lower-case letters, digits and dashes, from a letter',
      );
    let policy: ReleasePolicy;
    try {
      const parsed = parseSealedRequest(envelope);
      if (!parsed) throw new SealError('invalid', `the body is not a sealed envelope (${SUITE_NAME})`);
      policy = parsePolicy(parsed.public?.policy);
    } catch (error) {
      if (error instanceof SealError) throw badRequest('invalid-sealed-secret', error.message);
      throw error;
    }
    await this.db.transaction(async (tx) => {
      await tx
        .delete(sealedSecrets)
        .where(and(eq(sealedSecrets.functionId, functionId), eq(sealedSecrets.name, name)));
      await tx.insert(sealedSecrets).values({
        id: newId('sec'),
        tenantId,
        functionId,
        name,
        stage: policy.stage,
        policy,
        envelope: Buffer.from(envelope),
      });
    });
    return { name, policy };
  }

  /** Every release decision for one secret, oldest first. */
  async releases(functionId: string, name: string) {
    const secret = await this.db.query.sealedSecrets.findFirst({
      where: and(eq(sealedSecrets.functionId, functionId), eq(sealedSecrets.name, name)),
    });
    if (!secret) return undefined;
    const rows = await this.db
      .select()
      .from(keyReleases)
      .where(eq(keyReleases.secretId, secret.id))
      .orderBy(asc(keyReleases.createdAt));
    return rows.map((r) => ({
      cid: r.cid,
      eid: r.eid,
      stage: r.stage,
      measurement: r.measurement,
      released: r.released,
      reason: r.reason,
      nativeEvidence: toBase64(r.nativeEvidence),
      at: new Date(r.createdAt).toISOString(),
    }));
  }

  /**
   * Called when an enclave has been attested, before its stage program starts: has the broker release
   * to it each secret its stage declares. Every decision is logged with the enclave's evidence. Throws
   * SecretReleaseError when a declared secret is refused, or is missing and not optional: the enclave
   * must then not start (a stage never silently runs without a secret it declared).
   */
  async releaseTo(
    functionId: string,
    enclave: ReadyEnclave,
    declared: readonly DeclaredSecret[],
  ): Promise<{ name: string; released: boolean; reason: string }[]> {
    if (!declared.length) return [];
    const { handle, native, cid } = enclave;
    const stage = handle.stage;
    if (!handle.publicKey || !handle.encryptionKey)
      throw new SecretReleaseError(
        stage,
        `the ${handle.backend} backend gives stage "${stage}" no attested encryption key to release its secrets to`,
      );
    const secrets = await this.db
      .select()
      .from(sealedSecrets)
      .where(
        and(
          eq(sealedSecrets.functionId, functionId),
          inArray(
            sealedSecrets.name,
            declared.map((d) => d.name),
          ),
        ),
      );
    const failures: string[] = [];
    for (const wanted of declared)
      if (!wanted.optional && !secrets.some((s) => s.name === wanted.name))
        failures.push(`secret "${wanted.name}" is declared by stage "${stage}" but has not been uploaded`);
    const outcomes = [];
    if (secrets.length) {
      const adapter = this.adapterFor(handle.backend);
      const broker = await this.broker(handle.backend);
      const requester = {
        cid,
        eid: handle.eid,
        stage,
        publicKey: Buffer.from(handle.publicKey).toString('hex'),
        encryptionKey: Buffer.from(handle.encryptionKey).toString('hex'),
        nativeFormat: native.format,
        nativeEvidence: toBase64(native.bytes),
        measurement: handle.measurement,
      };
      for (const secret of secrets) {
        const decided = await broker.release(secret.envelope, requester);
        let released = decided.ok;
        let reason = decided.ok
          ? `released to ${cid}/${handle.eid}, sealed to its encryption key`
          : decided.reason;
        if (decided.ok) {
          const provisioned = adapter.provisionSecret
            ? await adapter.provisionSecret(handle, decided.released)
            : { ok: false, detail: 'the backend cannot provision secrets' };
          if (!provisioned.ok) {
            released = false;
            reason = `released, but the enclave did not open it: ${provisioned.detail}`;
          }
        }
        await this.db.insert(keyReleases).values({
          id: newId('kr'),
          secretId: secret.id,
          cid,
          eid: handle.eid,
          stage,
          measurement: `${handle.measurement.alg}:${handle.measurement.value}`,
          released,
          reason,
          nativeEvidence: Buffer.from(native.bytes),
        });
        if (!released)
          failures.push(`secret "${secret.name}" was not released to stage "${stage}": ${reason}`);
        outcomes.push({ name: secret.name, released, reason });
      }
    }
    if (failures.length) throw new SecretReleaseError(stage, failures.join('; '));
    return outcomes;
  }
}
