import { Redis, type RedisOptions } from 'ioredis';
import { Problem } from '../problem.ts';

/** The Redis URL as it may be shown: without its password. */
export function redactRedisUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString().replace(/\/$/, '');
  } catch {
    return '(an invalid Redis URL)';
  }
}

/** Redis could not be reached; names the URL (without its password). */
export class RedisUnavailableError extends Error {
  constructor(
    readonly url: string,
    cause: string,
  ) {
    super(`Redis at ${redactRedisUrl(url)} is unavailable: ${cause}`);
    this.name = 'RedisUnavailableError';
  }
}

/** What an HTTP caller gets while Redis is down: 503, fail fast, try again shortly. */
export function redisUnavailableProblem(url: string, cause: string): Problem {
  return new Problem(
    503,
    'redis-unavailable',
    'Service unavailable',
    `Redis at ${redactRedisUrl(url)} is unavailable (${cause}); try again shortly`,
    { retryAfter: 1 },
  );
}

/**
 * A client for short commands on the request path (leases): no offline queue and one retry, so a
 * command fails at once while Redis is down, and the client reconnects by itself when it is back.
 */
export function commandClient(url: string, options: RedisOptions = {}): Redis {
  const client = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    connectTimeout: 2_000,
    retryStrategy: (times) => Math.min(50 * 2 ** times, 1_000),
    ...options,
  });
  client.on('error', () => undefined);
  return client;
}

/** A connection for BullMQ queues and workers (which need `maxRetriesPerRequest: null`). */
export function queueClient(url: string): Redis {
  const client = new Redis(url, {
    maxRetriesPerRequest: null,
    retryStrategy: (times) => Math.min(100 * 2 ** times, 2_000),
  });
  client.on('error', () => undefined);
  return client;
}

/** Checks that Redis answers within the deadline; throws a RedisUnavailableError naming the URL if not. */
export async function requireRedis(url: string, timeoutMs = 3_000): Promise<void> {
  const probe = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    connectTimeout: timeoutMs,
    retryStrategy: () => null,
  });
  let lastError = 'no answer';
  probe.on('error', (error: Error) => (lastError = error.message));
  try {
    await probe.connect();
    await probe.ping();
  } catch (error) {
    throw new RedisUnavailableError(url, lastError !== 'no answer' ? lastError : (error as Error).message);
  } finally {
    probe.disconnect();
  }
}
