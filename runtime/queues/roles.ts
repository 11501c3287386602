import { batchRole } from '../batch/role.ts';
import { poolRole } from '../pool/role.ts';
import type { WorkerRole } from './registry.ts';

/**
 * Every role `ebcc worker` can run, in start order (they stop in reverse). A new kind of queue work
 * adds one line here and keeps its substance in its own home.
 */
export const WORKER_ROLES: WorkerRole[] = [poolRole, batchRole];
