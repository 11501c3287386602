import type { RedisOptions } from 'bullmq';

/**
 * ioredis options from a redis:// or rediss:// URL, for BullMQ to open (and close) its own
 * connections with. Workers must wait out a Redis outage (`maxRetriesPerRequest: null`); producers on
 * the request path fail fast instead.
 */
export function redisOptions(url: string, role: 'worker' | 'producer'): RedisOptions {
  const u = new URL(url);
  const db = Number(u.pathname.replace(/^\//, '') || 0);
  return {
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port: Number(u.port || 6379),
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    db: Number.isInteger(db) ? db : 0,
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
    ...(role === 'worker'
      ? { maxRetriesPerRequest: null }
      : { maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: 2_000 }),
    retryStrategy: (times: number) => Math.min(100 * times, 2_000),
  };
}
