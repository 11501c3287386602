import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { BatchProducer } from '../batch/producer.ts';
import { startBatchWorkers } from '../batch/worker.ts';
import type { Config } from '../config.ts';
import { createLogger, type Logger } from '../log.ts';
import { startNode } from '../node.ts';
import { createApp } from './app.ts';
import { RetentionService } from '../retention/job.ts';
import { limitConnections, serverCreationOptions } from './connection-limits.ts';

export interface RunningGateway {
  url: string;
  port: number;
  /** Graceful stop; in-flight invocations get until `deadline` (epoch ms, default 5 s from now). */
  close(deadline?: number): Promise<void>;
}

/** Opens the database (migrating it), connects Redis, and serves the gateway over HTTP or HTTPS. */
export async function startGateway(
  config: Config,
  logger: Logger = createLogger(config.logLevel),
): Promise<RunningGateway> {
  const node = await startNode(config, logger);
  const { database, redis, committer, manager, pool, keyring, namespace } = node;
  const retention = new RetentionService({
    db: database.db,
    redisUrl: config.redisUrl,
    intervalMs: config.retentionIntervalMs,
    logger,
    prefix: config.queuePrefix,
    queue: namespace.retentionQueue,
  });
  const batches = new BatchProducer(config.redisUrl, config.queuePrefix, namespace.batchQueue, logger);
  // The single-node default: this process also runs the batch workers (`EBCC_BATCH_WORKERS=0` to not).
  const workers = config.batchWorkers
    ? await startBatchWorkers({
        db: database.db,
        committer,
        pool,
        logger,
        redisUrl: config.redisUrl,
        prefix: config.queuePrefix,
        namespace,
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
    node,
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
    // Graceful: no new connections, in-flight invocations get until the deadline, then the node closes.
    close: async (deadline = Date.now() + 5_000) => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // close() waits for every connection to end; idle keep-alive ones are ended now, busy ones once
      // their invocation had until the deadline.
      const http = server as Server;
      http.closeIdleConnections();
      const cutoff = setTimeout(() => http.closeAllConnections(), Math.max(0, deadline - Date.now()) + 1_000);
      void closed.then(() => clearTimeout(cutoff));
      await workers?.close(deadline);
      await batches.close();
      await retention.close();
      await node.close(deadline);
      http.closeIdleConnections();
      await closed;
    },
  };
}
