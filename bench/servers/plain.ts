/**
 * The baselines of benchmark 2: the handlers of the two benchmark functions served without EBCC, by a
 * plain Hono app on @hono/node-server or by plain node:http. They do the same JSON work as the EBCC
 * path: parse the body, and for `/stage` serialise it as the anchor does for the stage, parse it as the
 * stage does, serialise the stage's reply and parse it back, then answer JSON.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { serveHarness } from '../lib/child.ts';

/** What the stage of `bench-stage` does, with the anchor's serialisation on both sides. */
function inlineStage(body: { n?: unknown }): unknown {
  const request = Buffer.from(JSON.stringify(body));
  const parsed = JSON.parse(request.toString('utf8')) as { n?: unknown };
  const reply = Buffer.from(JSON.stringify({ n: parsed.n, echoed: true }));
  return JSON.parse(reply.toString('utf8'));
}

async function startHono(): Promise<Server> {
  const app = new Hono();
  app.post('/nostage', async (c) => {
    const body = await c.req.json<{ n?: unknown }>();
    return c.json({ n: body.n, ok: true });
  });
  app.post('/stage', async (c) => {
    const body = await c.req.json<{ n?: unknown }>();
    return c.json({ n: body.n, stage: inlineStage(body) });
  });
  return new Promise((resolve) => {
    const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, () =>
      resolve(server as Server),
    );
  });
}

async function startNodeHttp(): Promise<Server> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      let body: { n?: unknown };
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { n?: unknown };
      } catch {
        res.writeHead(400).end();
        return;
      }
      const answer =
        req.url === '/nostage'
          ? { n: body.n, ok: true }
          : req.url === '/stage'
            ? { n: body.n, stage: inlineStage(body) }
            : undefined;
      if (req.method !== 'POST' || !answer) {
        res.writeHead(404).end();
        return;
      }
      const text = JSON.stringify(answer);
      res.writeHead(200, { 'content-type': 'application/json' }).end(text);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

const kind = process.argv[2] ?? process.env.BENCH_SERVER;
try {
  const server = kind === 'hono' ? await startHono() : kind === 'http' ? await startNodeHttp() : undefined;
  if (!server) throw new Error(`unknown server kind ${kind}; use hono or http`);
  const { port } = server.address() as AddressInfo;
  serveHarness(
    async () => ({}),
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  process.send!({ type: 'ready', url: `http://127.0.0.1:${port}` });
} catch (error) {
  process.send!({ type: 'fatal', error: (error as Error).message });
}
