// The sandboxed-process anchor executor on its own (real sandboxes, no gateway): how it reports ends.
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ProcessAnchorExecutor } from '../runtime/anchor/process-executor.ts';
import type { AnchorInstance, AnchorSpec, InvocationHooks } from '../runtime/anchor/types.ts';
import { cleanupAll, tempDir } from './helpers/env.ts';

afterAll(cleanupAll);

const SOURCE = `
export default {
  async fetch(request) {
    const mode = new URL(request.url).searchParams.get('mode');
    if (mode === 'spin') for (;;) {}
    return new Response('ok');
  },
};
`;

const hooks: InvocationHooks = {
  stage: async () => ({ ok: false, code: 'unknown-stage', status: 400, message: 'none here' }),
};
const request = (mode = '') => ({
  method: 'GET',
  url: `http://fn.test/?mode=${mode}`,
  headers: [] as [string, string][],
  body: new Uint8Array(0),
});

async function launch(): Promise<AnchorInstance> {
  const rootDir = await tempDir('ebcc-anchor-');
  await writeFile(join(rootDir, 'anchor.mjs'), SOURCE, { mode: 0o644 });
  await chmod(rootDir, 0o755); // the sandbox's own uid reads it
  const spec: AnchorSpec = {
    cid: `c_test_${Math.random().toString(36).slice(2)}`,
    rootDir,
    entry: 'anchor.mjs',
    vars: {},
    stageNames: [],
    limits: { memoryMb: 64, cpuMs: 2000, timeoutMs: 400 },
    networkAllow: [],
  };
  const anchor = await new ProcessAnchorExecutor().launch(spec);
  anchor.start();
  return anchor;
}

describe('ProcessAnchorExecutor', () => {
  it('answers a timeout only once the hung anchor is gone', async () => {
    const anchor = await launch();
    const ok = await anchor.invoke(request(), hooks);
    expect(ok.outcome.kind).toBe('response');
    let exited = false;
    void anchor.exited.then(() => (exited = true));
    const { outcome, finished } = await anchor.invoke(request('spin'), hooks);
    expect(outcome).toEqual({ kind: 'timeout', message: 'the anchor did not finish within 400 ms' });
    // By the time the caller hears of the timeout, the process has ended, so its instance can be
    // marked stopped before anyone else is handed it.
    expect(exited).toBe(true);
    expect((await anchor.exited).reason).toBe('killed');
    await expect(finished).resolves.toMatchObject({ waitUntilErrors: [] });
  });

  it('an invocation of an anchor that already ended fails at once as crashed', async () => {
    const anchor = await launch();
    anchor.kill('SIGKILL');
    const exit = await anchor.exited;
    expect(exit).toMatchObject({ signal: 'SIGKILL', reason: 'killed' });
    const started = Date.now();
    const { outcome } = await anchor.invoke(request(), hooks);
    expect(Date.now() - started).toBeLessThan(200);
    expect(outcome).toEqual({
      kind: 'crashed',
      message: 'the anchor process had already ended (killed by SIGKILL)',
    });
  });
});
