/**
 * Benchmark 6 of issue 8, the floor: what this machine costs for the four things every EBCC invocation
 * or start is built from, with nothing of EBCC around them. Interleaved round by round.
 *   - a bare sandbox spawn: runSandboxed(['/bin/true']) with the anchor's limits, as the sandbox code
 *     launches every anchor and sim enclave (bash wrapper, setpriv, bwrap with new namespaces, cgroups);
 *   - one fsync: a 4 KiB write and fdatasync on a file beside the benchmark's databases;
 *   - one signature: Ed25519 over 32 bytes (the evidence signature algorithm, runtime/evidence/keys.ts);
 *   - one HTTP round trip on loopback: a keep-alive GET to a node:http server answering 204.
 */
import { createServer, type Server } from 'node:http';
import { randomBytes } from 'node:crypto';
import { open, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { ed25519Sign, ed25519Verify, generateEd25519 } from '../runtime/evidence/keys.ts';
import { floor } from './cold-bench.ts';
import { KeepAliveClient } from './lib/http-client.ts';
import type { BenchRecorder } from './lib/results.ts';
import { interleaved } from './lib/rounds.ts';

export const FLOOR_ITEMS = {
  'sandbox spawn (/bin/true)': 'ms',
  fsync: 'ms',
  'Ed25519 signature': 'µs',
  'HTTP round trip (loopback)': 'ms',
} as const;
type Item = keyof typeof FLOOR_ITEMS;

export async function runFloorBench(options: {
  rounds: number;
  /** A directory on the filesystem the databases live on. */
  scratchParent: string;
  rec: BenchRecorder;
  log: (line: string) => void;
}): Promise<void> {
  const { rec, log } = options;
  const scratch = await mkdtemp(join(options.scratchParent, 'floor-'));
  const file = await open(join(scratch, 'fsync.bin'), 'w');
  const block = randomBytes(4096);
  const { privateKey, publicKey } = generateEd25519();
  const server: Server = createServer((_req, res) => {
    res.statusCode = 204;
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  const client = new KeepAliveClient();
  // Each signature is too short to time alone against the timer's resolution: 200 per sample.
  const SIGNS = 200;
  try {
    const run: Record<Item, () => Promise<number>> = {
      'sandbox spawn (/bin/true)': () => floor('sandbox'),
      fsync: async () => {
        const t0 = performance.now();
        await file.write(block, 0, block.length, 0);
        await file.datasync();
        return performance.now() - t0;
      },
      'Ed25519 signature': async () => {
        const message = randomBytes(32);
        let signature!: Buffer;
        const t0 = performance.now();
        for (let i = 0; i < SIGNS; i++) signature = ed25519Sign(privateKey, message);
        const us = ((performance.now() - t0) * 1000) / SIGNS;
        if (!ed25519Verify(publicKey, message, signature))
          throw new Error('the floor signature does not verify');
        return us;
      },
      'HTTP round trip (loopback)': async () => {
        const got = await client.send('GET', url, undefined);
        if (got.status !== 204) throw new Error(`loopback server answered ${got.status}`);
        if (client.connections !== 1) throw new Error('keep-alive did not hold on loopback');
        return got.ms;
      },
    };
    log(`  ${options.rounds} interleaved rounds of ${Object.keys(run).join(', ')}`);
    const results = await interleaved(
      Object.entries(run).map(([name, op]) => ({ name, run: op })),
      { warmupRounds: 3, rounds: options.rounds },
    );
    for (const [name, unit] of Object.entries(FLOOR_ITEMS)) {
      const samples = results.get(name)!.map((s) => s.sample);
      rec.distribution(name, 'floor', samples, unit);
    }
  } finally {
    client.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await file.close();
    await rm(scratch, { recursive: true, force: true });
  }
}
