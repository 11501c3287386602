import { BackendUnavailableError, type TeeAdapter } from './types.ts';

/**
 * Backends that need TEE hardware this host does not have. They refuse honestly instead of pretending:
 * a launch that is not protected by the TEE it names would make its evidence a lie.
 */
export function createHardwareOnlyAdapter(backend: string, needs: string): TeeAdapter {
  const refuse = (what: string): never => {
    throw new BackendUnavailableError(
      backend,
      `backend "${backend}" is unavailable on this host: ${what} needs ${needs}`,
    );
  };
  return {
    backend,
    probe: async () => ({ available: false, hardwareProtected: false, detail: `needs ${needs}` }),
    measure: async () => refuse('measuring a stage'),
    create: async () => refuse('creating an enclave'),
    run: async () => refuse('running a stage'),
    attest: async () => refuse('attesting an enclave'),
    destroy: async () => ({}),
  };
}
