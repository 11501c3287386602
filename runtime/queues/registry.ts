import type { Redis } from 'ioredis';
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import type { NodeRuntime } from '../node.ts';

/**
 * The BullMQ worker registry: every kind of queue work that `ebcc worker` runs is a role here (pool
 * upkeep, batch execution, ...). A role starts its BullMQ workers and schedulers from the shared
 * context and hands back how to stop them.
 */
export interface WorkerRole {
  /** Short name, used by `ebcc worker --roles`. */
  name: string;
  description: string;
  start(context: WorkerContext): Promise<RunningRole>;
}

export interface RunningRole {
  /**
   * Graceful stop: take no new jobs, finish the active ones (or hand them back to the queue) before
   * `deadline` (epoch ms), release what is held, close queues and connections.
   */
  close(deadline: number): Promise<void>;
}

export interface WorkerContext {
  config: Config;
  logger: Logger;
  /** This process's identity among pool nodes: `<host>:<pid>`. */
  nodeId: string;
  /** A new BullMQ connection (`maxRetriesPerRequest: null`); the worker host closes it at the end. */
  connection(): Redis;
  /**
   * The host-local runtime of this process (database, lifecycle manager, pool router, metrics),
   * made on first use and shared by every role; a role that invokes functions goes through it.
   */
  node(): Promise<NodeRuntime>;
}
