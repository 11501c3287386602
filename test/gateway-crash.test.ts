import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { migrateDatabase, openDatabase } from '../db/client.ts';
import { ensureTenant, issueToken } from '../runtime/auth/tokens.ts';
import { api, cleanupAll, sampleBundle, tempDir, upload, postJson, sampleOrder } from './helpers/env.ts';
import { spawnServer } from './helpers/process.ts';

afterAll(cleanupAll);

function processGone(pid: number): boolean {
  try {
    // A zombie still has a /proc entry; "gone" means reaped too.
    readFileSync(`/proc/${pid}/stat`, 'utf8');
    return false;
  } catch {
    return true;
  }
}

async function until(check: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return check();
}

describe('the gateway killed with SIGKILL and restarted', () => {
  it('reaps its processes, reconciles its instances, and loses no committed artifact', async () => {
    const home = await tempDir('ebcc-gwcrash-');
    const database = await openDatabase(`file:${join(home, 'ebcc.db')}`);
    await migrateDatabase(database);
    const tenant = await ensureTenant(database.db, 'acme');
    const { token } = await issueToken(database.db, { tenantId: tenant.id, name: 't', scopes: ['admin'] });
    database.close();

    const first = await spawnServer(home);
    expect((await upload(first.url, token, await sampleBundle())).status).toBe(201);
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const response = await postJson(first.url, '/fn/order-signer', token, sampleOrder(`o-${i}`));
      expect(response.status).toBe(200);
      ids.push(response.headers.get('x-ebcc-invocation')!);
    }
    const before = (await api(first.url, token, 'GET', '/v1/instances')).body.instances;
    expect(before).toHaveLength(1);
    const anchorPid = before[0].pid as number;
    const cid = before[0].id as string;

    process.kill(first.gatewayPid, 'SIGKILL');
    await first.exited;
    // The sandboxes die with the gateway and the supervisor reaps them: no process and no zombie remains.
    expect(await until(() => processGone(anchorPid), 5_000)).toBe(true);

    const second = await spawnServer(home);
    try {
      const state = await api(second.url, token, 'GET', `/v1/instances/${cid}`);
      expect(state.body.status).toBe('stopped');
      expect(state.body.annotations['ebcc.stopReason']).toMatch(/^reconciled after restart/);
      expect(
        JSON.parse(state.body.annotations['ebcc.enclaves']).every((e: { destroyed: boolean }) => e.destroyed),
      ).toBe(true);
      for (const [i, id] of ids.entries()) {
        const record = await api(second.url, token, 'GET', `/v1/invocations/${id}`);
        expect(record.status).toBe(200);
        expect(record.body.executions).toHaveLength(1);
        const request = Buffer.from(record.body.executions[0].request.base64, 'base64').toString();
        expect(JSON.parse(request).orderId).toBe(`o-${i}`);
      }
      const again = await postJson(second.url, '/fn/order-signer', token, sampleOrder('after'));
      expect(again.status).toBe(200);
      expect(again.headers.get('x-ebcc-start')).toBe('cold');
      const eids = await api(
        second.url,
        token,
        'GET',
        `/v1/invocations/${again.headers.get('x-ebcc-invocation')}`,
      );
      expect(eids.body.executions[0].eid).toBeGreaterThan(
        Number(JSON.parse(state.body.annotations['ebcc.enclaves'])[0].eid),
      );
    } finally {
      second.child.kill('SIGTERM');
      await second.exited;
    }
  }, 60_000);
});
