/**
 * The tenant-side client for sealed invocations (docs/security.md): fetch a stage's enclave key,
 * verify the evidence binding it before trusting it, seal the input to it, invoke, open the sealed
 * response, and check that the enclave's signed evidence binds exactly what the client sent and got.
 * It needs the operator's trust anchor (`ebcc trust export`), never the gateway's word.
 */
import { appraiseEnclaveKey, type EnclaveKeyAppraisal, type ReferenceValue } from '../evidence/verify.ts';
import { decodeEvidence } from '../evidence/eat.ts';
import type { EvidenceBundleInput } from '../evidence/bundle.ts';
import type { TrustAnchor } from '../evidence/software-root.ts';
import {
  LOG_FORMAT,
  openReply,
  plaintextDigest,
  SEALED_CONTENT_TYPE,
  sealRequest,
  type ClientExchange,
} from '../seal/envelope.ts';
import { enclaveKeyDocumentSchema, type EnclaveKeyDocument } from '../seal/key-document.ts';

export { SEALED_CONTENT_TYPE } from '../seal/envelope.ts';
export type { EnclaveKeyDocument } from '../seal/key-document.ts';

export class SealedClientError extends Error {
  constructor(
    message: string,
    readonly status?: number,
    readonly body?: unknown,
  ) {
    super(message);
    this.name = 'SealedClientError';
  }
}

export interface TrustOptions {
  trustAnchors: (TrustAnchor | Uint8Array)[];
  /** Accept a software root (sim). */
  allowSim: boolean;
  referenceValues?: ReferenceValue[];
}

export interface SealedClientOptions extends TrustOptions {
  /** Gateway base URL, e.g. http://127.0.0.1:8787. */
  url: string;
  token?: string;
}

/** Parses a key document and appraises the enclave behind it; `trusted` only when nothing failed. */
export function verifyEnclaveKey(
  document: unknown,
  trust: TrustOptions,
): { trusted: boolean; key?: EnclaveKeyDocument; appraisal: EnclaveKeyAppraisal } {
  const parsed = enclaveKeyDocumentSchema.safeParse(document);
  if (!parsed.success) {
    const detail = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    return {
      trusted: false,
      appraisal: { status: 'contraindicated', reasons: [{ check: 'key.document', ok: false, detail }] },
    };
  }
  const key = parsed.data;
  const appraisal = appraiseEnclaveKey(key.enclave, key.cid, trust);
  const consistent = key.enclave.stage === key.stage;
  if (!consistent)
    appraisal.reasons.push({ check: 'key.document', ok: false, detail: 'the enclave is of another stage' });
  const trusted = consistent && appraisal.reasons.every((r) => r.ok);
  return {
    trusted,
    key,
    appraisal: { ...appraisal, status: trusted ? appraisal.status : 'contraindicated' },
  };
}

export interface SealedResult {
  status: number;
  headers: Headers;
  /** The opened stage output when the reply was sealed; else the raw body (an error, in clear). */
  body: Buffer;
  sealed: boolean;
  invocationId: string | null;
  exchange: ClientExchange;
  key: EnclaveKeyDocument;
}

/** A client bound to one gateway and one set of trust anchors. Keys are cached per function/stage. */
export class SealedClient {
  private readonly keys = new Map<string, EnclaveKeyDocument>();
  constructor(private readonly options: SealedClientOptions) {}

  private async fetch(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.options.token) headers.set('authorization', `Bearer ${this.options.token}`);
    return fetch(new URL(path, this.options.url), { ...init, headers });
  }

  /** The verified key of a stage's enclave; throws when the evidence does not affirm it. */
  async key(fn: string, stage: string, refresh = false): Promise<EnclaveKeyDocument> {
    const id = `${fn}/${stage}`;
    const cached = this.keys.get(id);
    if (cached && !refresh) return cached;
    const response = await this.fetch(
      `/v1/functions/${encodeURIComponent(fn)}/stages/${encodeURIComponent(stage)}/key`,
    );
    const body: unknown = await response.json().catch(() => undefined);
    if (!response.ok) {
      const detail = (body as { detail?: string } | undefined)?.detail ?? response.statusText;
      throw new SealedClientError(`cannot get the key of ${id}: ${detail}`, response.status, body);
    }
    const verdict = verifyEnclaveKey(body, this.options);
    if (!verdict.trusted || !verdict.key) {
      const failed = verdict.appraisal.reasons.filter((r) => !r.ok).map((r) => `${r.check}: ${r.detail}`);
      throw new SealedClientError(
        `the key of ${id} is not trusted: ${failed.join('; ')}`,
        undefined,
        verdict,
      );
    }
    this.keys.set(id, verdict.key);
    return verdict.key;
  }

  /**
   * Seals `input` to the stage's verified enclave key and POSTs it to the function. The fields the
   * manifest allows (`sealing.publicFields`) are also shown in clear when `input` is a JSON object,
   * unless `showPublic` is false. A 421 (the request reached another enclave) refreshes the key once.
   */
  async invoke(
    fn: string,
    stage: string,
    input: Uint8Array | Record<string, unknown>,
    options: { path?: string; headers?: Record<string, string>; showPublic?: boolean } = {},
  ): Promise<SealedResult> {
    for (let attempt = 0; ; attempt++) {
      const key = await this.key(fn, stage, attempt > 0);
      const plaintext = input instanceof Uint8Array ? input : Buffer.from(JSON.stringify(input));
      const fields =
        input instanceof Uint8Array || options.showPublic === false
          ? undefined
          : Object.fromEntries(key.sealing.publicFields.filter((f) => f in input).map((f) => [f, input[f]]));
      const exchange = sealRequest(Buffer.from(key.enclave.encryptionKey, 'hex'), plaintext, {
        ...(fields && Object.keys(fields).length ? { public: fields } : {}),
      });
      const path = options.path ?? '/';
      const response = await this.fetch(
        `/fn/${encodeURIComponent(fn)}${path.startsWith('/') ? path : `/${path}`}`,
        {
          method: 'POST',
          headers: { ...options.headers, 'content-type': SEALED_CONTENT_TYPE },
          body: new Uint8Array(exchange.envelope),
        },
      );
      const raw = Buffer.from(await response.arrayBuffer());
      if (response.status === 421 && attempt === 0) continue;
      const sealed = (response.headers.get('content-type') ?? '').startsWith(SEALED_CONTENT_TYPE);
      return {
        status: response.status,
        headers: response.headers,
        body: sealed ? openReply(raw, exchange) : raw,
        sealed,
        invocationId: response.headers.get('x-ebcc-invocation'),
        exchange,
        key,
      };
    }
  }

  /** The invocation's evidence bundle (as the gateway exports it). */
  async evidence(invocationId: string): Promise<EvidenceBundleInput> {
    const response = await this.fetch(`/v1/invocations/${encodeURIComponent(invocationId)}/evidence`);
    if (!response.ok) throw new SealedClientError(`no evidence for ${invocationId}`, response.status);
    return (await response.json()) as EvidenceBundleInput;
  }
}

export interface SealedExecutionCheck {
  ok: boolean;
  /** The stage's log, opened (it is sealed to the client's response key too). */
  log?: Buffer;
  reasons: string[];
}

/**
 * Checks, with the client's own keys, that the execution of a sealed request in `bundle` saw exactly
 * the plaintext the client sealed and produced exactly the plaintext it opened: the signed evidence
 * binds the envelopes by SHA-256 (`ebcc verify` checks those) and the plaintexts by HMAC under a key
 * only the client and the enclave hold. Run `verifyBundle` on the same bundle for the rest.
 */
export function checkSealedExecution(
  bundle: EvidenceBundleInput,
  exchange: ClientExchange,
  response: Uint8Array,
): SealedExecutionCheck {
  const reasons: string[] = [];
  const execution = bundle.executions.find((x) =>
    Buffer.from(x.artifacts.request, 'base64').equals(exchange.envelope),
  );
  if (!execution) return { ok: false, reasons: ['no execution in the bundle received this sealed request'] };
  let claims;
  try {
    claims = decodeEvidence(Buffer.from(execution.evidence, 'base64')).claims;
  } catch (error) {
    return { ok: false, reasons: [`evidence: ${(error as Error).message}`] };
  }
  let log: Buffer | undefined;
  try {
    log = openReply(Buffer.from(execution.artifacts.log, 'base64'), exchange, LOG_FORMAT);
  } catch (error) {
    reasons.push(`log: ${(error as Error).message}`);
  }
  const check = (name: string, claimed: Buffer | undefined, plaintext: Uint8Array | undefined) => {
    if (!claimed)
      reasons.push(`${name}: the evidence has no plaintext digest (the request was not opened sealed)`);
    else if (plaintext && !claimed.equals(plaintextDigest(exchange.digestKey, plaintext)))
      reasons.push(`${name}: the plaintext digest in the evidence differs from the client's`);
  };
  check('request', claims.requestPlaintextDigest, undefined);
  if (claims.requestPlaintextDigest && !claims.requestPlaintextDigest.equals(exchange.plaintextDigest))
    reasons.push('request: the enclave saw another plaintext than the one sealed');
  check('response', claims.responsePlaintextDigest, response);
  if (log) check('log', claims.logPlaintextDigest, log);
  return { ok: reasons.length === 0, ...(log ? { log } : {}), reasons };
}
