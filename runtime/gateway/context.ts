import type { Redis } from 'ioredis';
import type { Database, Db } from '../../db/client.ts';
import type { Principal } from '../auth/tokens.ts';
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';

export interface GatewayDeps {
  database: Database;
  db: Db;
  config: Config;
  logger: Logger;
  redis: Redis;
}

export interface AppEnv {
  Variables: {
    requestId: string;
    principal: Principal;
  };
}
