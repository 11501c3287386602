import { createHmac } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import {
  createSoftwareRoot,
  exportTrustAnchor,
  parseSoftwareRoot,
  serializeSoftwareRoot,
  softwareRootReport,
  type SoftwareRoot,
} from '../../runtime/evidence/software-root.ts';
import type { Measurement, NativeEvidence } from '../types.ts';

/**
 * The sim backend's security monitor: it plays Keystone's SM, signing an enclave report over the
 * enclave's measurement (which it took itself) and the binding the runtime asks for, under a software
 * device root generated once per installation and kept root-only. The evidence marks itself as not
 * hardware-protected; a verifier accepts it only when told to.
 */
export class SimSecurityMonitor {
  private root: SoftwareRoot | undefined;

  constructor(private readonly dataDir: string) {}

  get rootPath(): string {
    return join(this.dataDir, 'sim', 'device-root.json');
  }

  private load(): SoftwareRoot {
    if (this.root) return this.root;
    const path = this.rootPath;
    if (existsSync(path)) {
      this.root = parseSoftwareRoot(readFileSync(path, 'utf8'));
    } else {
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      const root = createSoftwareRoot();
      const staging = `${path}.tmp-${process.pid}`;
      writeFileSync(staging, serializeSoftwareRoot(root), { mode: 0o600 });
      // Two processes may race to create it; the first rename wins and both then read the same root.
      if (!existsSync(path)) renameSync(staging, path);
      this.root = parseSoftwareRoot(readFileSync(path, 'utf8'));
    }
    return this.root;
  }

  /**
   * Swaps the device root for a new one; the old one is kept beside it, so that evidence it signed can
   * still be checked against its exported anchor. Running enclaves keep their reports.
   */
  rotate(): Record<string, unknown> {
    const path = this.rootPath;
    if (existsSync(path))
      renameSync(path, `${path}.retired-${new Date().toISOString().replace(/[:.]/g, '-')}`);
    this.root = undefined;
    return this.trustAnchor();
  }

  trustAnchor(): Record<string, unknown> {
    return exportTrustAnchor(this.load());
  }

  /**
   * The sealing key of a measurement on this device (Keystone's `sm_derive_sealing_key`, SGX's EGETKEY
   * with the MRENCLAVE policy): the same enclave code gets the same key across restarts, other code a
   * different one. Here it is an HMAC under the SM's private key, which root on the host can read.
   */
  sealingKey(measurement: Measurement): Buffer {
    const sm = this.load().smKey.privateKey.export({ format: 'der', type: 'pkcs8' });
    return createHmac('sha256', sm)
      .update(`ebcc-sim-sealing/1\0${measurement.alg}:${measurement.value}`)
      .digest();
  }

  devicePublicKey(): Buffer {
    return this.load().devicePublicKey;
  }

  attest(measurement: Measurement, binding: Uint8Array): NativeEvidence {
    const root = this.load();
    const report = softwareRootReport(root, Buffer.from(measurement.value, 'hex'), binding);
    return { format: 'keystone-report', bytes: report };
  }
}
