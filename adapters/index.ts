import { createHardwareOnlyAdapter } from './hardware-only.ts';
import { createOpteeAdapter } from './optee/index.ts';
import { createSimAdapter } from './sim/index.ts';
import type { TeeAdapter } from './types.ts';

export * from './types.ts';

/** Every backend a manifest may name. Only this module maps names to implementations. */
export const BACKENDS = ['sim', 'keystone', 'sgx', 'tdx', 'optee'] as const;
export type BackendName = (typeof BACKENDS)[number];
export const DEFAULT_BACKEND: BackendName = 'sim';

export interface AdapterConfig {
  /** Where backends keep their per-installation state (the sim device root, caches). */
  dataDir: string;
}

let config: AdapterConfig = { dataDir: '.ebcc' };

/** Sets where backends keep their state; call before the first `getAdapter`. */
export function configureAdapters(next: AdapterConfig): void {
  config = next;
  instances.clear();
}

const factories: Record<BackendName, () => TeeAdapter> = {
  sim: () => createSimAdapter(config),
  keystone: () => createHardwareOnlyAdapter('keystone', 'a RISC-V board with the Keystone security monitor'),
  sgx: () => createHardwareOnlyAdapter('sgx', 'an Intel SGX-capable CPU and driver (/dev/sgx_enclave)'),
  tdx: () => createHardwareOnlyAdapter('tdx', 'an Intel TDX guest (/dev/tdx_guest)'),
  optee: () => createOpteeAdapter(config),
};

const instances = new Map<string, TeeAdapter>();

export function isBackendName(name: string): name is BackendName {
  return (BACKENDS as readonly string[]).includes(name);
}

/** The roots verifiers must trust for each backend that has one on this host. */
export function trustAnchors(): { backend: string; anchor: Record<string, unknown> }[] {
  return BACKENDS.flatMap((backend) => {
    const anchor = getAdapter(backend).trustAnchor?.();
    return anchor ? [{ backend, anchor }] : [];
  });
}

/** Replaces every software root on this host; verifiers then need the new anchors. */
export function rotateTrustAnchors(): { backend: string; anchor: Record<string, unknown> }[] {
  return BACKENDS.flatMap((backend) => {
    const anchor = getAdapter(backend).rotateTrustAnchor?.();
    return anchor ? [{ backend, anchor }] : [];
  });
}

export function getAdapter(backend: string): TeeAdapter {
  if (!isBackendName(backend))
    throw new Error(`unknown TEE backend "${backend}"; known: ${BACKENDS.join(', ')}`);
  let adapter = instances.get(backend);
  if (!adapter) {
    adapter = factories[backend]();
    instances.set(backend, adapter);
  }
  return adapter;
}
