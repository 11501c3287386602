import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import { configureAdapters } from '../adapters/index.ts';
import { migrateDatabase, openDatabase, type Database } from '../db/client.ts';
import { installationId } from '../db/queries/installation.ts';
import { anchorExecutor } from './anchor/select.ts';
import { GroupCommitter } from './artifacts/group-commit.ts';
import type { Config } from './config.ts';
import { prepareHome } from './home.ts';
import { CompositeManager } from './lifecycle/manager.ts';
import type { Logger } from './log.ts';
import { LeaseStore } from './pool/leases.ts';
import { LocalPool } from './pool/local-pool.ts';
import { PoolMetrics } from './pool/metrics.ts';
import { announceToNodes, PoolUpkeep } from './pool/upkeep.ts';
import { redisNamespace, type RedisNamespace } from './queues/namespace.ts';
import { commandClient, queueClient, redactRedisUrl } from './queues/redis.ts';
import { EidAllocator } from './stages/eid-allocator.ts';
import { DataKeyring } from './keys/data-keys.ts';
import { openKekProvider } from './keys/provider.ts';

/** How long an instance lease lives without renewal: a dead holder's lease is free after this. */
export const LEASE_TTL_MS = 10_000;

/**
 * The host-local runtime of one process that runs instances (a gateway, or an `ebcc worker`): the
 * database, the group committer, the lifecycle manager, the pool router with its Redis leases and
 * metrics, and the pool's upkeep jobs. Instances live in this process and are leased only by it.
 */
export interface NodeRuntime {
  config: Config;
  logger: Logger;
  database: Database;
  committer: GroupCommitter;
  /** Tenants' data keys (artifacts at rest). */
  keyring: DataKeyring;
  manager: CompositeManager;
  pool: LocalPool;
  metrics: PoolMetrics;
  upkeep: PoolUpkeep;
  /** Short commands (leases, readiness): fails fast while Redis is down, reconnects by itself. */
  redis: Redis;
  hostId: string;
  /** `<host>:<pid>`: this process among pool nodes. */
  nodeId: string;
  /** This installation's queue and key names in a Redis it may share with other installations. */
  namespace: RedisNamespace;
  /** Asks every pool node (this one included) for upkeep now: after a deploy, rollback or delete. */
  announce(reason: string): Promise<void>;
  /** Graceful stop: no new leases, in-flight work until `deadline` (epoch ms), then everything closed. */
  close(deadline?: number): Promise<void>;
}

export interface NodeOptions {
  /** Upkeep tick (default 2 s). */
  upkeepIntervalMs?: number;
  /** How long a caller waits for a busy pool at its maximum before 429 (default: the config's). */
  maxWaitMs?: number;
}

export async function startNode(
  config: Config,
  logger: Logger,
  options: NodeOptions = {},
): Promise<NodeRuntime> {
  prepareHome(config.home, config.dbUrl);
  configureAdapters({ dataDir: config.home });
  const database = await openDatabase(config.dbUrl, config.dbAuthToken);
  await migrateDatabase(database);
  prepareHome(config.home, config.dbUrl);
  const namespace = redisNamespace(await installationId(database.db));
  // A node must still come up (and a gateway serve deploys) while Redis is down: it says so, and
  // invocations that need a lease answer 503 until Redis is back.
  const redis = commandClient(config.redisUrl);
  await redis
    .connect()
    .catch((error: Error) =>
      logger.warn(
        { redis: redactRedisUrl(config.redisUrl), err: error.message },
        `Redis at ${redactRedisUrl(config.redisUrl)} is unavailable at start; invocations answer 503 until it is back`,
      ),
    );
  const queueConnection = queueClient(config.redisUrl);
  const keyring = new DataKeyring(database, openKekProvider(config));
  const committer = new GroupCommitter(database.db);
  const hostId = process.env.EBCC_NODE_ID ?? hostname();
  const nodeId = `${hostId}:${process.pid}`;
  const manager = new CompositeManager({
    db: database.db,
    committer,
    eids: new EidAllocator(database.db, nodeId),
    executor: anchorExecutor(config),
    home: config.home,
    hostId,
    logger,
    keyring,
  });
  await manager.reconcile();
  const metrics = new PoolMetrics(manager);
  const upkeeps: PoolUpkeep[] = [];
  const pool = new LocalPool(manager, {
    leases: new LeaseStore(redis, config.redisUrl, nodeId, { ttlMs: LEASE_TTL_MS, keys: namespace }),
    metrics,
    logger,
    maxWaitMs: options.maxWaitMs ?? config.poolMaxWaitMs,
    onUpkeepNeeded: (reason) => void upkeeps[0]?.trigger(reason),
  });
  const upkeep = new PoolUpkeep({
    db: database.db,
    manager,
    pool,
    logger,
    nodeId,
    namespace,
    connection: () => queueConnection,
    intervalMs: options.upkeepIntervalMs,
  });
  upkeeps.push(upkeep);
  // The upkeep queue needs Redis; without it the node serves (concurrent functions, deploys) and
  // the queue connects when Redis comes back.
  void upkeep.start().catch((error: Error) => logger.warn({ err: error.message }, 'pool upkeep not started'));
  let closed: Promise<void> | undefined;
  return {
    config,
    logger,
    database,
    committer,
    keyring,
    manager,
    pool,
    metrics,
    upkeep,
    redis,
    hostId,
    nodeId,
    namespace,
    announce: (reason) => announceToNodes(queueConnection, namespace, reason, logger),
    close: (deadline = Date.now() + 5_000) =>
      (closed ??= (async () => {
        await pool.close(deadline);
        await upkeep.close();
        await manager.shutdown();
        // An instance whose creation was under way during the first pass is stopped by a second.
        if ([...manager.live.values()].some((i) => i.status !== 'stopped')) await manager.shutdown();
        await committer.close();
        redis.disconnect();
        queueConnection.disconnect();
        database.close();
      })()),
  };
}
