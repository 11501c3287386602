import { join } from 'node:path';
import { sandboxSupport } from '../../runtime/sandbox/index.ts';
import type { AdapterConfig } from '../index.ts';
import type { EnclaveHandle, TeeAdapter } from '../types.ts';
import { measureSimStage } from './measure.ts';
import { SimSecurityMonitor } from './security-monitor.ts';
import { ShimEnclave } from './shim-enclave.ts';
import { shimBundle } from './shim/bundle.ts';

/**
 * The software backend. Each enclave is a bubblewrap sandbox running the shim, which runs the stage;
 * a software security monitor signs Keystone-format reports under a per-installation device root. It
 * isolates stages from each other and from the host's users, but a root-level host attacker can read
 * it; its evidence says so.
 */
export function createSimAdapter(config: AdapterConfig): TeeAdapter {
  const enclaves = new Map<number, ShimEnclave>();
  const monitor = new SimSecurityMonitor(config.dataDir);
  const shim = () => shimBundle(join(config.dataDir, 'cache'));
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
    trustAnchor: () => monitor.trustAnchor(),
    rotateTrustAnchor: () => monitor.rotate(),
    async create(stage, identity) {
      // The security monitor measures the enclave itself; it never takes the host's word for it.
      const handle: EnclaveHandle = {
        ...identity,
        stage: stage.name,
        backend: 'sim',
        measurement: await measureSimStage(stage),
      };
      const enclave = new ShimEnclave(stage, handle, shim());
      enclaves.set(handle.eid, enclave);
      try {
        const keys = await enclave.keys;
        handle.publicKey = keys.publicKey;
        handle.encryptionKey = keys.encryptionKey;
      } catch (error) {
        enclaves.delete(handle.eid);
        await enclave.destroy();
        throw error;
      }
      return handle;
    },
    async attest(handle, binding) {
      return monitor.attest(handle.measurement, binding);
    },
    async run(handle, request) {
      const enclave = enclaves.get(handle.eid);
      if (!enclave) throw new Error(`sim enclave ${handle.eid} does not exist`);
      return enclave.run(request);
    },
    async destroy(handle, evidence) {
      const enclave = enclaves.get(handle.eid);
      enclaves.delete(handle.eid);
      const checkpoint = await enclave?.destroy(evidence);
      return checkpoint ? { checkpoint } : {};
    },
  };
}
