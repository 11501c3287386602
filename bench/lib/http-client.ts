/**
 * The load loop's client: node:http with one keep-alive connection per target (maxSockets 1), so that a
 * request measures the server, not connection setup. It counts the connections it opened, so the
 * harness can prove that keep-alive held.
 */
import { Agent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';

const REQUEST_TIMEOUT_MS = 30_000;

export interface HttpResult {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** From just before the request is written until the last byte of the response body has arrived. */
  ms: number;
}

export class KeepAliveClient {
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 1, keepAliveMsecs: 10_000 });
  private readonly seen = new WeakSet<Socket>();
  connections = 0;

  post(url: string, body: string, headers: Record<string, string> = {}): Promise<HttpResult> {
    return this.send('POST', url, body, headers);
  }

  send(method: string, url: string, body: string | undefined, headers: Record<string, string> = {}) {
    const payload = body === undefined ? undefined : Buffer.from(body);
    return new Promise<HttpResult>((resolve, reject) => {
      const t0 = performance.now();
      const req = httpRequest(
        url,
        {
          method,
          agent: this.agent,
          headers: {
            ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
            ...headers,
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: Buffer.concat(chunks),
              ms: performance.now() - t0,
            }),
          );
          res.on('error', reject);
        },
      );
      req.on('socket', (socket: Socket) => {
        if (!this.seen.has(socket)) {
          this.seen.add(socket);
          this.connections++;
        }
      });
      req.on('error', reject);
      // A request that never completes must fail the run, not hang it.
      req.setTimeout(REQUEST_TIMEOUT_MS, () =>
        req.destroy(new Error(`${method} ${url}: no response within ${REQUEST_TIMEOUT_MS} ms`)),
      );
      req.end(payload);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
