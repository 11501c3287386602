import { sandboxSupport } from '../../runtime/sandbox/index.ts';
import type { EnclaveHandle, TeeAdapter } from '../types.ts';
import { PersistentEnclave, runOneshot } from './enclave.ts';
import { measureSimStage } from './measure.ts';

/**
 * The software backend: each enclave is a bubblewrap sandbox. It isolates stages from each other and
 * from the host's users, but a root-level host attacker can read it; evidence says so.
 */
export function createSimAdapter(): TeeAdapter {
  const persistent = new Map<number, PersistentEnclave>();
  const images = new Map<number, Parameters<TeeAdapter['create']>[0]>();
  return {
    backend: 'sim',
    probe: async () => {
      const support = await sandboxSupport();
      return {
        available: support.bwrap,
        hardwareProtected: false,
        detail: `software simulation: ${support.detail}`,
      };
    },
    measure: measureSimStage,
    async create(stage, identity) {
      const handle: EnclaveHandle = {
        ...identity,
        stage: stage.name,
        backend: 'sim',
        measurement: await measureSimStage(stage),
      };
      images.set(handle.eid, stage);
      if (stage.mode === 'persistent') persistent.set(handle.eid, new PersistentEnclave(stage, handle));
      return handle;
    },
    async run(handle, request) {
      const enclave = persistent.get(handle.eid);
      if (enclave) return enclave.run(request);
      const image = images.get(handle.eid);
      if (!image) throw new Error(`sim enclave ${handle.eid} does not exist`);
      return runOneshot(image, handle, request);
    },
    attest: async () => {
      throw new Error('sim native evidence is not implemented yet (the evidence work, issue 4)');
    },
    async destroy(handle) {
      const enclave = persistent.get(handle.eid);
      persistent.delete(handle.eid);
      images.delete(handle.eid);
      await enclave?.destroy();
    },
  };
}
