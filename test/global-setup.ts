import type {} from 'vitest';
import type { TestProject } from 'vitest/node';
import { startPrivateRedis, type PrivateRedis } from '../scripts/lib/redis-server.ts';

// Tests take Redis from REDIS_URL; without it we start a private, disk-less redis-server, so that tests
// may stop and restart it without touching anyone else's.
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  let redis: PrivateRedis | undefined;
  let url = process.env.REDIS_URL;
  if (!url) {
    redis = await startPrivateRedis();
    url = redis.url;
  }
  project.provide('redisUrl', url);
  project.provide('redisPrivate', Boolean(redis));
  return async () => {
    await redis?.dispose();
  };
}

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
    redisPrivate: boolean;
  }
}
