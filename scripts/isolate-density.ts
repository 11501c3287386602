// Resident memory of anchors: N warm anchors of the sample function (functions/order-signer) under
// the isolate executor (one host process) and, for comparison, under the process executor. Each anchor
// is launched, started and invoked once (the stage answers from here, so only the anchor is measured).
// Usage: npx tsx scripts/isolate-density.ts [--per-host=K] [N...]
//   default: 10 100, all of N in one host unless --per-host; the process executor only for N <= 10
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, chmodSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { IsolateAnchorExecutor } from '../runtime/anchor/isolate-executor.ts';
import { ProcessAnchorExecutor } from '../runtime/anchor/process-executor.ts';
import type { AnchorExecutor, AnchorInstance, InvocationHooks } from '../runtime/anchor/types.ts';

const MiB = 1024 * 1024;
const manifest = JSON.parse(readFileSync('functions/order-signer/composite.json', 'utf8'));
const hooks: InvocationHooks = {
  stage: async (stage) => ({
    ok: true,
    stage,
    eid: 1,
    seq: 1,
    executionId: 'x',
    body: Buffer.from(JSON.stringify({ signature: 'ab'.repeat(64), alg: 'Ed25519' })),
  }),
};
const order = Buffer.from(JSON.stringify({ orderId: 'o-1', amountCents: 100, currency: 'EUR', items: [] }));

/** Every process under `pid` (the sandbox's bwrap, its init and the workload), with their RSS. */
function treeRss(pid: number): number {
  let total = 0;
  const stack = [pid];
  while (stack.length) {
    const p = stack.pop()!;
    try {
      const status = readFileSync(`/proc/${p}/status`, 'utf8');
      total += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) * 1024;
      for (const task of readdirSync(`/proc/${p}/task`))
        for (const child of readFileSync(`/proc/${p}/task/${task}/children`, 'utf8')
          .split(' ')
          .filter(Boolean))
          stack.push(Number(child));
    } catch {
      // gone meanwhile
    }
  }
  return total;
}

async function measure(executor: AnchorExecutor, n: number, rootDir: string) {
  const started = Date.now();
  const anchors: AnchorInstance[] = [];
  for (let i = 0; i < n; i++) {
    const anchor = await executor.launch({
      cid: `c_density_${i}`,
      rootDir,
      entry: manifest.anchor.entry,
      vars: manifest.anchor.vars,
      stageNames: ['sign'],
      limits: manifest.anchor.limits,
      networkAllow: [],
    });
    anchor.start();
    const { outcome } = await anchor.invoke(
      {
        method: 'POST',
        url: 'http://fn.test/orders',
        headers: [['content-type', 'application/json']],
        body: order,
      },
      hooks,
    );
    if (outcome.kind !== 'response' || outcome.response.status !== 200)
      throw new Error(`anchor ${i} did not answer: ${JSON.stringify(outcome)}`);
    anchors.push(anchor);
  }
  const warmMs = Date.now() - started;
  await new Promise((r) => setTimeout(r, 1000));
  const pids = [...new Set(anchors.map((a) => a.pid!))];
  const rss = pids.reduce((sum, pid) => sum + treeRss(pid), 0);
  for (const a of anchors) a.kill();
  await Promise.all(anchors.map((a) => a.exited));
  return {
    executor: executor.name,
    n,
    processes: pids.length,
    rssMiB: rss / MiB,
    perAnchorMiB: rss / MiB / n,
    warmMs,
  };
}

const counts = process.argv
  .slice(2)
  .map(Number)
  .filter((n) => n > 0);
const perHostArg = process.argv.find((a) => a.startsWith('--per-host='));
const perHost = perHostArg ? Number(perHostArg.slice('--per-host='.length)) : 0;
const rootDir = mkdtempSync(join(tmpdir(), 'ebcc-density-'));
chmodSync(rootDir, 0o755);
cpSync('functions/order-signer', rootDir, { recursive: true });
try {
  for (const n of counts.length ? counts : [10, 100]) {
    const runs = [await measure(new IsolateAnchorExecutor({ anchorsPerHost: perHost || n }), n, rootDir)];
    if (n <= 10) runs.push(await measure(new ProcessAnchorExecutor(), n, rootDir));
    for (const r of runs)
      console.log(
        `${r.executor.padEnd(8)} N=${String(r.n).padStart(4)} processes=${r.processes} rss=${r.rssMiB.toFixed(1)} MiB ` +
          `per-anchor=${r.perAnchorMiB.toFixed(2)} MiB warm-all=${r.warmMs} ms load=${loadavg()
            .map((l) => l.toFixed(2))
            .join(' ')}`,
      );
  }
} finally {
  rmSync(rootDir, { recursive: true, force: true });
}
