import { BackendUnavailableError, type TeeAdapter } from '../types.ts';
import { measureSimStage } from './measure.ts';

export function createSimAdapter(): TeeAdapter {
  const notYet = (): never => {
    throw new BackendUnavailableError('sim', 'sim enclave execution is not implemented yet');
  };
  return {
    backend: 'sim',
    probe: async () => ({
      available: true,
      hardwareProtected: false,
      detail: 'software simulation in a bubblewrap sandbox',
    }),
    measure: measureSimStage,
    create: async () => notYet(),
    run: async () => notYet(),
    attest: async () => notYet(),
    destroy: async () => undefined,
  };
}
