import type { InstanceStatus } from '../../db/queries/instances.ts';
import type { AnchorExit, AnchorInstance } from '../anchor/types.ts';
import type { LoadedVersion } from '../registry/versions.ts';
import type { InstanceStages } from '../stages/dispatcher.ts';

export interface StopRecord {
  exitStatus: number | null;
  reason: string;
}

/** A composite instance that lives on this node: its anchor process and its stage enclaves. */
export class LiveInstance {
  status: InstanceStatus = 'creating';
  anchor: AnchorInstance | undefined;
  inflight = 0;
  lastUsedAt = Date.now();
  /** Set when its pool stops handing it out (an old version, a function going away): it is deleted once idle. */
  draining = false;
  /** The largest lease fencing token this instance has served under; a smaller one is stale and refused. */
  fence = 0;
  private markStopped!: (record: StopRecord) => void;
  /** Resolves once the instance has stopped, with its exit status. */
  readonly stopped: Promise<StopRecord>;
  stopRecord: StopRecord | undefined;

  constructor(
    readonly cid: string,
    readonly tenantId: string,
    readonly functionId: string,
    readonly functionName: string,
    readonly version: LoadedVersion,
    readonly stages: InstanceStages,
    /** `pool` instances are created and reaped by the router; `operator` ones only by their operator. */
    readonly managedBy: 'pool' | 'operator',
  ) {
    this.stopped = new Promise((resolve) => (this.markStopped = resolve));
  }

  stop(record: StopRecord): void {
    if (this.stopRecord) return;
    this.status = 'stopped';
    this.stopRecord = record;
    this.markStopped(record);
  }
}

/** The exit status an OCI runtime reports: the code, or 128 + the signal number. */
export function exitStatusOf(exit: AnchorExit, signals: Record<string, number>): number | null {
  if (exit.code !== null) return exit.code;
  if (exit.signal && signals[exit.signal] !== undefined) return 128 + signals[exit.signal]!;
  return null;
}

export function stopReasonOf(exit: AnchorExit, requested?: string): string {
  if (requested) return requested;
  switch (exit.reason) {
    case 'exit':
      return exit.code === 0 ? 'the anchor exited' : `the anchor exited with code ${exit.code}`;
    case 'memory':
      return 'the anchor exceeded its memory limit';
    case 'cpu':
      return 'the anchor exceeded its CPU-time budget';
    case 'timeout':
      return 'the anchor exceeded its lifetime';
    case 'output':
      return 'the anchor wrote more output than allowed';
    default:
      return `the anchor ended (${exit.reason}${exit.signal ? `, ${exit.signal}` : ''})${exit.detail ? `: ${exit.detail}` : ''}`;
  }
}
