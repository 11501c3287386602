import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import { startNode, type NodeRuntime } from '../node.ts';
import { queueClient, requireRedis } from './redis.ts';
import type { RunningRole, WorkerContext, WorkerRole } from './registry.ts';
import { WORKER_ROLES } from './roles.ts';

export interface RunningWorkers {
  nodeId: string;
  roles: string[];
  /** Graceful stop: roles in reverse order, each until the deadline; then the node and the connections. */
  close(deadline?: number): Promise<void>;
}

/** Picks roles by name (all when none are named); an unknown name is an error that lists the known ones. */
export function selectRoles(names: string[] | undefined, all: WorkerRole[] = WORKER_ROLES): WorkerRole[] {
  if (!names?.length) return all;
  const unknown = names.filter((n) => !all.some((r) => r.name === n));
  if (unknown.length)
    throw new Error(
      `unknown worker role(s) ${unknown.join(', ')}; known: ${all.map((r) => r.name).join(', ')}`,
    );
  return all.filter((r) => names.includes(r.name));
}

/**
 * Starts the BullMQ workers of `ebcc worker`. Redis must answer at start (a RedisUnavailableError
 * names the URL otherwise); later outages are ridden out by the connections' reconnects.
 */
export async function startWorkers(
  config: Config,
  logger: Logger,
  roles: WorkerRole[] = WORKER_ROLES,
): Promise<RunningWorkers> {
  await requireRedis(config.redisUrl);
  const hostId = process.env.EBCC_NODE_ID ?? hostname();
  const nodeId = `${hostId}:${process.pid}`;
  const connections: Redis[] = [];
  let node: Promise<NodeRuntime> | undefined;
  const context: WorkerContext = {
    config,
    logger,
    nodeId,
    connection: () => {
      const c = queueClient(config.redisUrl);
      connections.push(c);
      return c;
    },
    node: () => (node ??= startNode(config, logger)),
  };
  const running: RunningRole[] = [];
  const closeAll = async (deadline: number) => {
    for (const role of running.reverse()) await role.close(deadline).catch(() => undefined);
    if (node) await (await node).close(deadline);
    for (const c of connections) c.disconnect();
  };
  try {
    for (const role of roles) {
      running.push(await role.start(context));
      logger.info({ role: role.name }, 'worker role started');
    }
  } catch (error) {
    await closeAll(Date.now());
    throw error;
  }
  return {
    nodeId,
    roles: roles.map((r) => r.name),
    close: (deadline = Date.now() + 10_000) => closeAll(deadline),
  };
}
