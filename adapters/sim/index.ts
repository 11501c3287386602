import { join } from 'node:path';
import { sandboxSupport } from '../../runtime/sandbox/index.ts';
import type { AdapterConfig } from '../index.ts';
import { enclaveBinding } from '../../runtime/evidence/binding.ts';
import type { EnclaveHandle, KeyBroker, StageImage, TeeAdapter } from '../types.ts';
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
  let broker: Promise<KeyBroker> | undefined;

  /** The key broker: the shim alone in an enclave; its measurement covers the shim's code. */
  async function startBroker(): Promise<KeyBroker> {
    const bundle = shim();
    const image: StageImage = {
      name: 'key-broker',
      backend: 'sim',
      mode: 'persistent',
      image: { kind: 'script', interpreter: 'node', entry: 'sim-shim.mjs', files: [], args: [] },
      limits: {
        memoryMb: 64,
        cpuMs: 2000,
        timeoutMs: 5000,
        maxRequestBytes: 1 << 20,
        maxResponseBytes: 1 << 20,
      },
      rootDir: bundle.dir,
      imageDigest: `sha256:${bundle.sha256}`,
    };
    const handle: EnclaveHandle = {
      eid: 0,
      cid: 'key-broker',
      stage: 'key-broker',
      backend: 'sim',
      measurement: await measureSimStage(image),
    };
    const enclave = new ShimEnclave(image, handle, bundle, {
      sealingKey: monitor.sealingKey(handle.measurement),
      deviceKey: monitor.devicePublicKey(),
    });
    const keys = await enclave.keys;
    handle.publicKey = keys.publicKey;
    handle.encryptionKey = keys.encryptionKey;
    const native = monitor.attest(
      handle.measurement,
      enclaveBinding({ ...keys, cid: handle.cid, eid: handle.eid, stage: handle.stage }),
    );
    // One request at a time: the shim answers in order.
    let queue: Promise<unknown> = Promise.resolve();
    return {
      handle,
      native,
      cid: handle.cid,
      release(sealedSecret, requester) {
        const turn = queue.then(async () => {
          const { header, body } = await enclave.ask({ t: 'release', requester }, sealedSecret);
          if (header.t !== 'released') throw new Error(`the key broker answered ${header.t}`);
          return header.ok
            ? { ok: true as const, name: header.name, released: body }
            : { ok: false as const, reason: header.reason };
        });
        queue = turn.catch(() => undefined);
        return turn;
      },
    };
  }
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
    keyBroker() {
      broker ??= startBroker();
      broker.catch(() => (broker = undefined));
      return broker;
    },
    async provisionSecret(handle, released) {
      const enclave = enclaves.get(handle.eid);
      if (!enclave) return { ok: false, detail: `sim enclave ${handle.eid} does not exist` };
      const { header } = await enclave.ask(
        { t: 'secret', cid: handle.cid, eid: handle.eid, stage: handle.stage },
        released,
      );
      if (header.t === 'secret-opened')
        return { ok: true, detail: `opened ${header.name} inside the enclave` };
      return { ok: false, detail: header.t === 'secret-refused' ? header.reason : `unexpected ${header.t}` };
    },
    async startStage(handle) {
      const enclave = enclaves.get(handle.eid);
      if (!enclave) throw new Error(`sim enclave ${handle.eid} does not exist`);
      if (enclave.mode !== 'persistent') return; // a oneshot stage starts with each request
      const { header } = await enclave.ask({ t: 'start' });
      if (header.t !== 'started') throw new Error(`the sim enclave answered ${header.t} to start`);
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
