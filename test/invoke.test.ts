import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, cleanupAll, postJson, startSampleGateway, type TestGateway } from './helpers/env.ts';

// The sample function under both anchor executors: the isolate executor must serve it the same way.
describe.each(['process', 'isolate'] as const)('with the %s anchor executor', (anchorExecutor) => {
  let gw: TestGateway;
  let token: string;

  beforeAll(async () => {
    ({ gw, token } = await startSampleGateway({ anchorExecutor }));
  });
  afterAll(cleanupAll);

  const order = { orderId: 'o-1', amountCents: 1250, currency: 'EUR', items: [{ sku: 'book', qty: 2 }] };

  async function invoke(path: string, body: unknown, auth = token) {
    const response = await postJson(gw.url, path, auth, body);
    const text = await response.text();
    return { response, body: text ? JSON.parse(text) : null };
  }

  describe('HTTP invocation', () => {
    it('cold-starts an instance, runs the anchor and the sim stage, and reports it', async () => {
      const { response, body } = await invoke('/fn/order-signer/', order);
      expect(response.status, JSON.stringify(body)).toBe(200);
      expect(body).toMatchObject({ order: 'o-1', alg: 'Ed25519' });
      expect(body.signature).toMatch(/^[0-9a-f]{128}$/);
      expect(response.headers.get('x-ebcc-start')).toBe('cold');
      expect(response.headers.get('x-ebcc-eids')).toMatch(/^sign=\d+$/);
      const second = await invoke('/orders', { ...order, orderId: 'o-2' });
      expect(second.response.status).toBe(200);
      expect(second.response.headers.get('x-ebcc-start')).toBe('warm');
      expect(second.body.publicKey).toBe(body.publicKey);
      expect(second.response.headers.get('x-ebcc-eids')).toBe(response.headers.get('x-ebcc-eids'));

      const id = second.response.headers.get('x-ebcc-invocation')!;
      const record = await api(gw.url, token, 'GET', `/v1/invocations/${id}`);
      expect(record.status).toBe(200);
      expect(record.body).toMatchObject({
        function: 'order-signer',
        status: 'ok',
        httpStatus: 200,
        start: 'warm',
      });
      const [execution] = record.body.executions;
      expect(execution.stage).toBe('sign');
      expect(Buffer.from(execution.request.base64, 'base64').toString()).toContain('"orderId":"o-2"');
      expect(JSON.parse(Buffer.from(execution.response.base64, 'base64').toString()).signature).toBe(
        second.body.signature,
      );
      expect(execution.log.text).toContain('signed order o-2');
      expect(execution.seq).toBe(2);
      expect(Object.keys(execution.metadata.timings)).toEqual([
        'validate',
        'allocate',
        'dispatch',
        'execute',
        'evidence',
      ]);
      const cid = second.response.headers.get('x-ebcc-cid');
      const state = await api(gw.url, token, 'GET', `/v1/instances/${cid}`);
      expect(state.body.annotations['ebcc.anchorExecutor']).toBe(anchorExecutor);
    });
  });
});
