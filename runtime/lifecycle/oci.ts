import type { InstanceStatus } from '../../db/queries/instances.ts';

/** The OCI runtime-spec version whose `state` shape we follow. */
export const OCI_VERSION = '1.2.0';

export interface OciState {
  ociVersion: string;
  id: string;
  status: InstanceStatus;
  pid?: number;
  bundle: string;
  annotations: Record<string, string>;
}

export type LifecycleOp = 'start' | 'kill' | 'delete';

/** Which states each operation accepts, as runc enforces them. */
const allowed: Record<LifecycleOp, InstanceStatus[]> = {
  start: ['created'],
  kill: ['created', 'running'],
  delete: ['stopped'],
};

export function transitionError(op: LifecycleOp, cid: string, status: InstanceStatus): string | null {
  if (allowed[op].includes(status)) return null;
  if (op === 'start' && status === 'running') return `instance ${cid} is already running`;
  if (op === 'delete') return `instance ${cid} is ${status}; kill it first, or delete with force`;
  return `cannot ${op} instance ${cid}: it is ${status} (allowed from ${allowed[op].join(' or ')})`;
}
