import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { Redis } from 'ioredis';
import { hostname } from 'node:os';
import { configureAdapters } from '../../adapters/index.ts';
import { migrateDatabase, openDatabase } from '../../db/client.ts';
import { ProcessAnchorExecutor } from '../anchor/process-executor.ts';
import { GroupCommitter } from '../artifacts/group-commit.ts';
import { BatchProducer } from '../batch/producer.ts';
import { startBatchWorkers } from '../batch/worker.ts';
import { CompositeManager } from '../lifecycle/manager.ts';
import { LocalPool } from '../pool/local-pool.ts';
import { EidAllocator } from '../stages/eid-allocator.ts';
import type { Config } from '../config.ts';
import { createLogger, type Logger } from '../log.ts';
import { prepareHome } from '../home.ts';
import { createApp } from './app.ts';
import { DataKeyring } from '../keys/data-keys.ts';
import { openKekProvider } from '../keys/provider.ts';
import { RetentionService } from '../retention/job.ts';
import { limitConnections, serverCreationOptions } from './connection-limits.ts';

export interface RunningGateway {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Opens the database (migrating it), connects Redis, and serves the gateway over HTTP or HTTPS. */
export async function startGateway(
  config: Config,
  logger: Logger = createLogger(config.logLevel),
): Promise<RunningGateway> {
  prepareHome(config.home, config.dbUrl);
  configureAdapters({ dataDir: config.home });
  const database = await openDatabase(config.dbUrl, config.dbAuthToken);
  await migrateDatabase(database);
  prepareHome(config.home, config.dbUrl);
  // Readiness reports Redis; a gateway must still come up and serve deploys while Redis is down.
  const redis = new Redis(config.redisUrl, {
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
  });
  redis.on('error', (error) => logger.debug({ err: error }, 'redis'));
  redis
    .connect()
    .catch((error: Error) =>
      logger.warn({ redis: config.redisUrl, err: error.message }, 'redis unavailable at start'),
    );
  const keyring = new DataKeyring(database, openKekProvider(config));
  const committer = new GroupCommitter(database.db);
  const hostId = process.env.EBCC_NODE_ID ?? hostname();
  const manager = new CompositeManager({
    db: database.db,
    committer,
    eids: new EidAllocator(database.db, `${hostId}:${process.pid}`),
    executor: new ProcessAnchorExecutor(),
    home: config.home,
    hostId,
    logger,
    keyring,
  });
  await manager.reconcile();
  const pool = new LocalPool(manager);
  const retention = new RetentionService({
    db: database.db,
    redisUrl: config.redisUrl,
    intervalMs: config.retentionIntervalMs,
    logger,
    prefix: config.queuePrefix,
  });
  const batches = new BatchProducer(config.redisUrl, config.queuePrefix, logger);
  // The single-node default: this process also runs the batch workers (`EBCC_BATCH_WORKERS=0` to not).
  const workers = config.batchWorkers
    ? await startBatchWorkers({
        db: database.db,
        committer,
        pool,
        logger,
        redisUrl: config.redisUrl,
        prefix: config.queuePrefix,
        concurrency: config.batchConcurrency,
        lockDurationMs: config.batchLockMs,
      })
    : undefined;
  const app = createApp({
    database,
    db: database.db,
    config,
    logger,
    redis,
    committer,
    manager,
    pool,
    keyring,
    batches,
  });
  const tls = config.tls
    ? { key: readFileSync(config.tls.key), cert: readFileSync(config.tls.cert) }
    : undefined;
  const server: ServerType = await new Promise((resolve, reject) => {
    const s = serve(
      {
        fetch: app.fetch,
        hostname: config.host,
        port: config.port,
        serverOptions: { ...serverCreationOptions(config), ...tls },
        ...(tls ? { createServer: createHttpsServer } : {}),
      },
      () => resolve(s),
    );
    s.once('error', reject);
  });
  limitConnections(server as Server, config, logger);
  const { port } = server.address() as AddressInfo;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const url = `${tls ? 'https' : 'http'}://${host}:${port}`;
  logger.info(
    { url, db: database.url.startsWith('file:') ? database.url : '(remote libSQL)' },
    'gateway listening',
  );
  return {
    url,
    port,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // close() waits for every connection to end; idle keep-alive ones are ended now, busy ones soon.
      const http = server as Server;
      http.closeIdleConnections();
      const cutoff = setTimeout(() => http.closeAllConnections(), 5_000);
      void closed.then(() => clearTimeout(cutoff));
      await workers?.close();
      await batches.close();
      pool.close();
      await manager.shutdown();
      await closed;
      await committer.close();
      await retention.close();
      redis.disconnect();
      database.close();
    },
  };
}
