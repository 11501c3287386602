/**
 * OP-TEE stage latency (issue 7): the same order-signer TA, on the emulated board of scripts/optee/, invoked
 * (a) by a raw client of the board agent (open a session, invoke, as the agent protocol allows) and (b) through
 * EBCC: HTTP to the gateway, the sandboxed anchor, the stage dispatcher, the optee adapter, the agent, and
 * the artifacts and evidence committed. Both go through the same agent and the same TA; the board is
 * emulated (QEMU TCG on a shared machine), so its absolute numbers say nothing about real hardware.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AgentClient } from '../adapters/optee/agent-client.ts';
import { packFiles } from '../runtime/bundle/archive.ts';
import { bootBoard } from '../test/helpers/optee-board.ts';
import { startGatewayEnv } from './lib/gateway-env.ts';
import { summarize, type Summary } from './lib/stats.ts';

const TA = '8d0c5a4e-3f61-4b2a-a7c9-1e5f2b6d9c30';
const ORDER = { orderId: 'bench-1', amountCents: 990, currency: 'EUR', items: [{ sku: 'pen', qty: 3 }] };

export interface OpteeBenchResult {
  rounds: number;
  rawMs: Summary;
  ebccMs: Summary;
  ratio: number;
}

const ANCHOR = `
export default {
  async fetch(request, env) {
    const signed = await env.stages.sign.invoke(await request.json());
    return new Response(await signed.text(), { headers: { 'content-type': 'application/json' } });
  },
};
`;

export async function runOpteeBench(
  rounds: number,
  redisUrl: string,
  logFile: string,
): Promise<OpteeBenchResult> {
  const board = await bootBoard(20 * 60_000);
  try {
    const request = Buffer.from(JSON.stringify(ORDER));
    const context = createHash('sha256').update('bench').digest();
    // (a) the raw agent: one session, as a persistent stage has, then `rounds` invocations.
    const agent = new AgentClient(board.agentSocket, 120_000);
    await agent.hello();
    await agent.install(TA, readFileSync(join(board.buildDir, `${TA}.ta`)));
    const opened = await agent.open(TA);
    if (opened.status !== 0) throw new Error('the raw client could not open the TA');
    const session = opened.payload.readUInt32BE(0);
    const raw: number[] = [];
    for (let i = 0; i <= rounds; i++) {
      const t = performance.now();
      const got = await agent.invoke(session, 0, [request, context], [8192, 68]);
      if (!('out' in got) || got.ret !== 0) throw new Error('raw invocation failed');
      if (i > 0) raw.push(performance.now() - t); // the first one makes the TA's key
    }
    await agent.close(session);
    agent.shutdown();

    // (b) through EBCC: a gateway child process whose optee adapter talks to the same agent.
    process.env.EBCC_OPTEE_AGENT = board.agentSocket;
    const gw = await startGatewayEnv({ redisUrl, logFile });
    try {
      const manifest = {
        schemaVersion: 1,
        name: 'optee-bench',
        version: '1.0.0',
        anchor: { entry: 'anchor.mjs', limits: { timeoutMs: 180_000 } },
        stages: [
          {
            name: 'sign',
            backend: 'optee',
            mode: 'persistent',
            image: { kind: 'executable', entry: `ta/${TA}.ta` },
            limits: { timeoutMs: 120_000, maxResponseBytes: 8192 },
          },
        ],
        pool: { minWarm: 0, maxInstances: 1 },
      };
      const bundle = join(gw.home, 'optee-bench.tgz');
      await packFiles(
        {
          'composite.json': JSON.stringify(manifest),
          'anchor.mjs': ANCHOR,
          [`ta/${TA}.ta`]: { data: readFileSync(join(board.buildDir, `${TA}.ta`)), mode: 0o755 },
        },
        bundle,
      );
      const { url, adminToken, invokeToken } = gw.child.ready;
      const deployed = await fetch(`${url}/v1/functions`, {
        method: 'POST',
        headers: { 'content-type': 'application/gzip', authorization: `Bearer ${adminToken}` },
        body: readFileSync(bundle),
      });
      if (deployed.status !== 201) throw new Error(`deploy failed: ${await deployed.text()}`);
      const ebcc: number[] = [];
      for (let i = 0; i <= rounds; i++) {
        const t = performance.now();
        const response = await fetch(`${url}/fn/optee-bench`, {
          method: 'POST',
          headers: { authorization: `Bearer ${invokeToken}`, 'content-type': 'application/json' },
          body: request,
        });
        const text = await response.text();
        if (response.status !== 200) throw new Error(`invocation failed: ${response.status} ${text}`);
        if (i > 0) ebcc.push(performance.now() - t); // the first one is the cold start
      }
      const rawMs = summarize(raw, 'raw agent latency');
      const ebccMs = summarize(ebcc, 'EBCC latency');
      return { rounds, rawMs, ebccMs, ratio: ebccMs.p50 / rawMs.p50 };
    } finally {
      await gw.close();
    }
  } finally {
    await board.shutdown();
  }
}

export function printOptee(r: OpteeBenchResult, log: (line: string) => void): void {
  log(`OP-TEE order-signer TA, ${r.rounds} warm rounds each (emulated board):`);
  log(`  raw agent   median ${r.rawMs.p50.toFixed(1)} ms (min ${r.rawMs.min.toFixed(1)})`);
  log(`  via EBCC    median ${r.ebccMs.p50.toFixed(1)} ms (min ${r.ebccMs.min.toFixed(1)})`);
  log(`  ratio       ${r.ratio.toFixed(2)}×`);
}
