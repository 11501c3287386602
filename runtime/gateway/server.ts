import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import type { Config } from '../config.ts';
import { createLogger, type Logger } from '../log.ts';
import { startNode } from '../node.ts';
import { createApp } from './app.ts';

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
  const { database, redis, committer, manager, pool } = node;
  const app = createApp({ database, db: database.db, config, logger, redis, committer, manager, pool, node });
  const tls = config.tls
    ? { key: readFileSync(config.tls.key), cert: readFileSync(config.tls.cert) }
    : undefined;
  const server: ServerType = await new Promise((resolve, reject) => {
    const s = serve(
      {
        fetch: app.fetch,
        hostname: config.host,
        port: config.port,
        ...(tls ? { createServer: createHttpsServer, serverOptions: tls } : {}),
      },
      () => resolve(s),
    );
    s.once('error', reject);
  });
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
      await node.close(deadline);
      if ('closeIdleConnections' in server) server.closeIdleConnections();
      await closed;
    },
  };
}
