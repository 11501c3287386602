/**
 * The main job, end to end on a fresh machine: start a gateway on the `sim` backend, deploy the sample
 * confidential function by bundle upload, and show what the gateway recorded. Everything runs as a user
 * would run it: the `ebcc` CLI in separate processes, talking to a real gateway over loopback.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { redisAnswers, startPrivateRedis, type PrivateRedis } from './lib/redis-server.ts';

const root = resolve(import.meta.dirname, '..');
const home = join(root, '.ebcc', 'demo');
const entry = join(root, 'runtime', 'cli', 'entry.ts');

function ebcc(args: string[], env: Record<string, string>): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', entry, ...args], {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.once('exit', (code) =>
      code === 0 ? resolvePromise(out) : reject(new Error(`ebcc ${args.join(' ')} exited with ${code}`)),
    );
  });
}

async function main(): Promise<void> {
  rmSync(home, { recursive: true, force: true });
  let redis: PrivateRedis | undefined;
  let redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  if (!(await redisAnswers(redisUrl))) {
    redis = await startPrivateRedis();
    redisUrl = redis.url;
    console.log(`• started a private redis-server at ${redisUrl}`);
  }
  const env: Record<string, string> = { EBCC_HOME: home, REDIS_URL: redisUrl, EBCC_LOG_LEVEL: 'warn' };

  const token = (
    await ebcc(['token', 'create', '--tenant', 'demo', '--scopes', 'admin', '--name', 'demo'], env)
  ).trim();
  console.log(`• issued an admin token for tenant "demo" (${token.slice(0, 22)}…)`);

  const server = spawn(process.execPath, ['--import', 'tsx', entry, 'serve', '--port', '0'], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise<string>((resolveUrl, reject) => {
    let out = '';
    server.stdout.on('data', (d: Buffer) => {
      out += d;
      const match = /listening on (\S+)/.exec(out);
      if (match) resolveUrl(match[1]!);
    });
    server.once('exit', (code) => reject(new Error(`the gateway exited with ${code}`)));
  });
  console.log(`• gateway listening on ${url} (database ${join(home, 'ebcc.db')})`);

  try {
    const clientEnv = { ...env, EBCC_URL: url, EBCC_TOKEN: token };
    const ready = await fetch(`${url}/readyz`).then((r) => r.json());
    console.log(`• readiness: ${JSON.stringify(ready)}`);
    console.log('• deploying functions/order-signer by bundle upload:');
    process.stdout.write(await ebcc(['deploy', join(root, 'functions', 'order-signer')], clientEnv));
    // The verifier's trust anchor comes from the operator, out of band; the gateway is not trusted.
    const anchorFile = join(home, 'trust-anchor.json');
    await ebcc(['trust', 'export', '--output', anchorFile], env);
    console.log(
      `• exported the sim trust anchor (the per-installation software device root) to ${anchorFile}`,
    );
    const order = { orderId: 'demo-1', amountCents: 4200, currency: 'EUR', items: [{ sku: 'book', qty: 2 }] };
    for (const [i, label] of ['cold start', 'warm hit'].entries()) {
      const data = JSON.stringify({ ...order, orderId: `demo-${i + 1}` });
      const nonce = randomBytes(16).toString('hex');
      const call = JSON.parse(
        await ebcc(
          ['invoke', 'order-signer', '--json', '--data', data, '--header', `x-ebcc-nonce: ${nonce}`],
          clientEnv,
        ),
      ) as {
        status: number;
        invocation: string;
        cid: string;
        start: string;
        eids: string;
        body: string;
      };
      console.log(
        `\n• invocation ${i + 1} (${label}): HTTP ${call.status}, start=${call.start}, instance ${call.cid}`,
      );
      console.log(`  response: ${call.body}`);
      console.log(`  EIDs: ${call.eids}`);
      const record = JSON.parse(await ebcc(['invocation', call.invocation], clientEnv)) as {
        id: string;
        executions: {
          id: string;
          stage: string;
          eid: number;
          seq: number;
          request: { digest: string };
          response: { digest: string };
          log: { text: string };
          metadata: { timings: Record<string, number> };
        }[];
      };
      for (const x of record.executions) {
        console.log(`  stage ${x.stage}: eid ${x.eid} seq ${x.seq}, execution ${x.id}`);
        console.log(`    request ${x.request.digest}`);
        console.log(`    response ${x.response.digest}`);
        console.log(
          `    log ${JSON.stringify(x.log.text.trim())}; phases (ms) ${JSON.stringify(x.metadata.timings)}`,
        );
      }
      console.log(
        `  artifacts: ${join(home, 'ebcc.db')}, invocation ${record.id} (ebcc invocation ${record.id})`,
      );
      const bundleFile = join(home, `evidence-${i + 1}.json`);
      await ebcc(['export', call.invocation, '--output', bundleFile], clientEnv);
      const verdict = await ebcc(
        ['verify', bundleFile, '--trust-anchor', anchorFile, '--allow-sim', '--nonce', nonce],
        { ...env, EBCC_URL: 'http://127.0.0.1:1' },
      ).catch((error: Error) => `not affirming (${error.message})`);
      console.log(`  evidence verdict (offline, nonce ${nonce}, sim accepted): ${verdict.trim()}`);
    }
    // Queue-triggered work: one BullMQ job per order, each run through the pool like an invocation.
    const ordersFile = join(home, 'orders.json');
    writeFileSync(
      ordersFile,
      JSON.stringify(Array.from({ length: 20 }, (_, i) => ({ ...order, orderId: `batch-${i + 1}` }))),
    );
    console.log('\n• a batch of 20 orders (ebcc batch submit --wait):');
    const batch = JSON.parse(
      await ebcc(['batch', 'submit', 'order-signer', ordersFile, '--wait', '--json'], clientEnv),
    ) as { id: string; total: number; counts: Record<string, number>; percentDone: number };
    console.log(
      `  batch ${batch.id}: ${batch.total} items, ${Object.entries(batch.counts)
        .map(([status, n]) => `${status} ${n}`)
        .join(', ')} (${batch.percentDone}% done)`,
    );
    console.log('\n• instances (ebcc ps):');
    process.stdout.write(await ebcc(['ps'], clientEnv));
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
    await redis?.dispose();
  }
}

main().catch((error: Error) => {
  console.error(`demo failed: ${error.message}`);
  process.exitCode = 1;
});
