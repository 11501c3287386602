/**
 * What one installation (one database) keeps in Redis, named apart by its installation id: several
 * installations may share one Redis, and none may take another's jobs, schedules or leases. BullMQ
 * queue names may not contain ':', so queues carry the id after a '.'.
 *
 * The queues a function's manifest declares (`triggers.queue`) are the exception: their names are a
 * contract with outside producers, and keep the plain name under `EBCC_QUEUE_PREFIX`.
 */
export interface RedisNamespace {
  installationId: string;
  /** API batch items (and re-enqueued items); job data `{ itemId }`. */
  batchQueue: string;
  /** Cron ticks from the job schedulers. */
  cronQueue: string;
  retentionQueue: string;
  /** The janitor that forgets dead pool nodes. */
  janitorQueue: string;
  /** Sorted set of the live pool nodes' upkeep queues (score: last heard of, epoch ms). */
  poolNodesKey: string;
  /** Instance leases are `<leasePrefix><cid>`. */
  leasePrefix: string;
  /** The global counter of lease fencing tokens. */
  fenceKey: string;
  /** The upkeep queue of one pool node (`<host>:<pid>`). */
  upkeepQueue(nodeId: string): string;
}

export function redisNamespace(installationId: string): RedisNamespace {
  if (!/^[A-Za-z0-9_-]+$/.test(installationId))
    throw new Error(`installation id ${JSON.stringify(installationId)} cannot name Redis keys`);
  return {
    installationId,
    batchQueue: `ebcc-batch.${installationId}`,
    cronQueue: `ebcc-cron.${installationId}`,
    retentionQueue: `ebcc-retention.${installationId}`,
    janitorQueue: `pool-janitor.${installationId}`,
    poolNodesKey: `ebcc:${installationId}:pool:nodes`,
    leasePrefix: `ebcc:${installationId}:lease:`,
    fenceKey: `ebcc:${installationId}:lease:fence`,
    upkeepQueue: (nodeId) => `pool.${installationId}.${nodeId.replace(/[^A-Za-z0-9_.-]/g, '_')}`,
  };
}
