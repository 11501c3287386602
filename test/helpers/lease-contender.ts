// A separate process that contends for Redis leases: `node --import tsx lease-contender.ts <redisUrl>
// <mode> ...`. Used by test/pool-leases.test.ts; prints one JSON line per event.
import { Redis } from 'ioredis';
import { LeaseStore } from '../../runtime/pool/leases.ts';
import { redisNamespace } from '../../runtime/queues/namespace.ts';

const [redisUrl, mode, ...args] = process.argv.slice(2);
const redis = new Redis(redisUrl!, { maxRetriesPerRequest: 1 });
const now = () => performance.timeOrigin + performance.now();
// The installation whose lease keys the contenders share: the test passes its own.
const keys = redisNamespace(process.env.EBCC_TEST_INSTALLATION ?? 'inst_contender');
const say = (event: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(event)}\n`);

if (mode === 'contend') {
  // contend <resources,comma> <rounds> <holdMs>: takes leases round-robin, records each hold.
  const resources = args[0]!.split(',');
  const rounds = Number(args[1]);
  const holdMs = Number(args[2]);
  const store = new LeaseStore(redis, redisUrl!, `contender:${process.pid}`, { ttlMs: 10_000, keys });
  await redis.ping();
  let held = 0;
  for (let i = 0; held < rounds; i++) {
    const resource = resources[i % resources.length]!;
    const lease = await store.tryAcquire(resource);
    if (!lease) continue;
    const start = now();
    await new Promise((r) => setTimeout(r, holdMs));
    const end = now();
    say({ resource, token: lease.token, start, end });
    await lease.release();
    held++;
  }
  redis.disconnect();
} else if (mode === 'hold') {
  // hold <resource> <ttlMs>: takes the lease, says so, and keeps renewing it until killed.
  const store = new LeaseStore(redis, redisUrl!, `holder:${process.pid}`, { ttlMs: Number(args[1]), keys });
  await redis.ping();
  const lease = await store.tryAcquire(args[0]!);
  say({ held: Boolean(lease), token: lease?.token ?? null });
  setInterval(() => undefined, 1_000);
}
