import type { EvidenceBundle } from './bundle.ts';
import type { EarResult, VerifyBundleOptions } from './verify.ts';

/**
 * Evidence formats other than the built-in Keystone-report + EAT chain. A backend whose evidence has its
 * own shape registers a verifier here (from `adapters/`), keyed by the `nativeFormat` its enclaves record;
 * `verifyBundle` hands it bundles whose enclaves all use that format. Nothing here knows any backend.
 */
export interface EvidenceFormatVerifier {
  /** The enclaves' `nativeFormat` this verifier appraises. */
  nativeFormat: string;
  /** True when a trust-anchor JSON value is one of this format's anchors. */
  ownsAnchor(json: unknown): boolean;
  verify(bundle: EvidenceBundle, options: VerifyBundleOptions): EarResult;
}

const verifiers = new Map<string, EvidenceFormatVerifier>();

export function registerEvidenceFormat(verifier: EvidenceFormatVerifier): void {
  verifiers.set(verifier.nativeFormat, verifier);
}

export function evidenceFormatVerifier(nativeFormat: string): EvidenceFormatVerifier | undefined {
  return verifiers.get(nativeFormat);
}

/** Whether a registered format owns this trust-anchor JSON (it is then passed on as a foreign anchor). */
export function isForeignTrustAnchor(json: unknown): boolean {
  return [...verifiers.values()].some((v) => v.ownsAnchor(json));
}
