import type { Redis } from 'ioredis';
import type { RedisNamespace } from '../queues/namespace.ts';
import { RedisUnavailableError } from '../queues/redis.ts';

/**
 * Instance leases as Redis locks: `SET <key> <token>:<holder> NX PX <ttl>`, where the token comes from
 * one global `INCR` (a fencing token: every lease ever granted has a larger one than all before it).
 * The holder renews the expiry while it uses the instance; a holder that dies stops renewing, and the
 * lease is free again once its expiry passes. Renewal and release only touch a key that still carries
 * the holder's own token. Redis here keeps nothing on disk, so after a restart the counter starts
 * again: an acquirer passes the largest token it has seen for the resource (its floor), and the
 * counter is moved past it, so tokens keep growing for every resource across Redis restarts.
 */
const ACQUIRE = `
local token = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if token <= floor then
  token = floor + 1
  redis.call('SET', KEYS[2], token)
end
if redis.call('SET', KEYS[1], token .. ':' .. ARGV[2], 'NX', 'PX', ARGV[1]) then return token end
return 0`;
const RENEW = `
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ':' then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`;
const RELEASE = `
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ':' then return redis.call('DEL', KEYS[1]) end
return 0`;

export interface LeaseOptions {
  /** How long a lease lives without renewal (a dead holder's lease is free after at most this). */
  ttlMs: number;
  /** How often a live holder renews (default a third of the TTL). */
  renewEveryMs?: number;
  /** The installation's lease keys and fencing counter. */
  keys: Pick<RedisNamespace, 'leasePrefix' | 'fenceKey'>;
}

export class Lease {
  private timer: NodeJS.Timeout | undefined;
  private released = false;
  /** True once a renewal found the key gone or someone else's: the lease expired under its holder. */
  lost = false;

  constructor(
    private readonly store: LeaseStore,
    readonly resource: string,
    /** The fencing token: larger than every lease on any resource granted before this one. */
    readonly token: number,
    renewEveryMs: number,
  ) {
    this.timer = setInterval(() => void this.renew(), renewEveryMs);
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    if (this.released) return;
    try {
      if (!(await this.store.renew(this.resource, this.token))) {
        this.lost = true;
        this.stopRenewing();
      }
    } catch {
      // Redis is away for a moment: the next renewal tries again; the TTL covers the gap.
    }
  }

  private stopRenewing(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Gives the lease back (only if it is still this holder's). Never throws: an unreleased lease expires. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    this.stopRenewing();
    await this.store.release(this.resource, this.token).catch(() => undefined);
  }
}

export class LeaseStore {
  private readonly renewEveryMs: number;

  constructor(
    private readonly redis: Redis,
    readonly redisUrl: string,
    /** Who holds the leases taken here (for operators reading Redis): `<host>:<pid>`. */
    private readonly holder: string,
    readonly options: LeaseOptions,
  ) {
    this.renewEveryMs = options.renewEveryMs ?? Math.max(50, Math.floor(options.ttlMs / 3));
  }

  /** Whether Redis is connected now; callers fail fast instead of queueing behind a dead connection. */
  get available(): boolean {
    return this.redis.status === 'ready';
  }

  private async call<T>(work: () => Promise<T>): Promise<T> {
    if (!this.available) throw new RedisUnavailableError(this.redisUrl, `connection ${this.redis.status}`);
    try {
      return await work();
    } catch (error) {
      throw new RedisUnavailableError(this.redisUrl, (error as Error).message);
    }
  }

  /**
   * Takes the lease on `resource` if nobody holds it; null when it is held. Throws if Redis is down.
   * `floor`: the largest token the caller has seen for the resource; the new one is larger.
   */
  async tryAcquire(resource: string, floor = 0): Promise<Lease | null> {
    const token = Number(
      await this.call(() =>
        this.redis.eval(
          ACQUIRE,
          2,
          this.options.keys.leasePrefix + resource,
          this.options.keys.fenceKey,
          this.options.ttlMs,
          this.holder,
          floor,
        ),
      ),
    );
    return token > 0 ? new Lease(this, resource, token, this.renewEveryMs) : null;
  }

  async renew(resource: string, token: number): Promise<boolean> {
    const renewed = await this.call(() =>
      this.redis.eval(RENEW, 1, this.options.keys.leasePrefix + resource, String(token), this.options.ttlMs),
    );
    return Number(renewed) === 1;
  }

  async release(resource: string, token: number): Promise<boolean> {
    const deleted = await this.call(() =>
      this.redis.eval(RELEASE, 1, this.options.keys.leasePrefix + resource, String(token)),
    );
    return Number(deleted) === 1;
  }

  /** Who holds `resource` now (`<token>:<holder>`), or null. */
  async holderOf(resource: string): Promise<string | null> {
    return this.call(() => this.redis.get(this.options.keys.leasePrefix + resource));
  }
}
