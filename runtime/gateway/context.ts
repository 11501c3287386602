import type { Redis } from 'ioredis';
import type { Database, Db } from '../../db/client.ts';
import type { Principal } from '../auth/tokens.ts';
import type { BatchProducer } from '../batch/producer.ts';
import type { GroupCommitter } from '../artifacts/group-commit.ts';
import type { Config } from '../config.ts';
import type { CompositeManager } from '../lifecycle/manager.ts';
import type { DataKeyring } from '../keys/data-keys.ts';
import type { Logger } from '../log.ts';
import type { LocalPool } from '../pool/local-pool.ts';
import type { NodeRuntime } from '../node.ts';

export interface GatewayDeps {
  database: Database;
  db: Db;
  config: Config;
  logger: Logger;
  redis: Redis;
  committer: GroupCommitter;
  manager: CompositeManager;
  pool: LocalPool;
  keyring: DataKeyring;
  batches: BatchProducer;
  /** The host-local runtime the above come from (pool upkeep, metrics, announcements to other nodes). */
  node: NodeRuntime;
}

export interface AppEnv {
  Variables: {
    requestId: string;
    principal: Principal;
  };
}
