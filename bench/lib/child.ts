/**
 * Benchmark servers run in child processes of their own (so that the load loop and the server under
 * test do not share an event loop), and talk to the harness over Node's IPC channel.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';

export interface ChildServer<Ready> {
  ready: Ready;
  pid: number;
  /** Sends a request and waits for the child's reply to it. */
  ask<T>(message: Record<string, unknown>, timeoutMs?: number): Promise<T>;
  /** Asks the child to shut down cleanly (so that a CPU profile gets written) and waits for its exit. */
  stop(): Promise<void>;
}

interface Reply {
  id?: number;
  type: string;
  error?: string;
  [key: string]: unknown;
}

export async function startChild<Ready>(
  script: string,
  options: { env?: Record<string, string>; logFile: string; nodeArgs?: string[]; startTimeoutMs?: number },
): Promise<ChildServer<Ready>> {
  const log = openSync(options.logFile, 'w');
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [...(options.nodeArgs ?? []), '--import', 'tsx', script], {
      env: { ...process.env, ...options.env },
      stdio: ['ignore', log, log, 'ipc'],
    });
  } finally {
    closeSync(log);
  }
  const waiting = new Map<number, { resolve: (reply: Reply) => void; reject: (error: Error) => void }>();
  let nextId = 1;
  let exited: { code: number | null; signal: string | null } | undefined;
  const exit = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      for (const w of waiting.values())
        w.reject(new Error(`${script} exited (${code ?? signal}); see ${options.logFile}`));
      waiting.clear();
      resolve();
    }),
  );
  const ready = await new Promise<Ready>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${script} did not become ready; see ${options.logFile}`)),
      options.startTimeoutMs ?? 60_000,
    );
    child.on('message', (raw) => {
      const message = raw as Reply;
      if (message.type === 'ready') {
        clearTimeout(timer);
        resolve(message as unknown as Ready);
        return;
      }
      if (message.type === 'fatal') {
        clearTimeout(timer);
        reject(new Error(`${script}: ${message.error}`));
        return;
      }
      const w = message.id !== undefined ? waiting.get(message.id) : undefined;
      if (!w) return;
      waiting.delete(message.id!);
      if (message.error) w.reject(new Error(`${script}: ${message.error}`));
      else w.resolve(message);
    });
    void exit.then(() => {
      clearTimeout(timer);
      reject(
        new Error(`${script} exited before it was ready (${JSON.stringify(exited)}); see ${options.logFile}`),
      );
    });
  }).catch(async (error: Error) => {
    child.kill('SIGKILL');
    await exit;
    throw error;
  });

  return {
    ready,
    pid: child.pid!,
    ask: <T>(message: Record<string, unknown>, timeoutMs = 60_000) => {
      if (exited) return Promise.reject(new Error(`${script} has exited; see ${options.logFile}`));
      const id = nextId++;
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiting.delete(id);
          reject(new Error(`${script} did not answer ${JSON.stringify(message)} within ${timeoutMs} ms`));
        }, timeoutMs);
        waiting.set(id, {
          resolve: (reply) => {
            clearTimeout(timer);
            resolve(reply as T);
          },
          reject: (error) => {
            clearTimeout(timer);
            reject(error);
          },
        });
        child.send({ ...message, id });
      });
    },
    stop: async () => {
      if (exited) return;
      child.send({ type: 'shutdown' });
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exit;
      clearTimeout(timer);
    },
  };
}

/** The child side: answers the harness's requests with `handler`, and `shutdown` with `onShutdown`. */
export function serveHarness(
  handler: (message: Record<string, unknown>) => Promise<Record<string, unknown>>,
  onShutdown: () => Promise<void>,
): void {
  // The harness went away (it failed, or was interrupted): do not outlive it.
  process.once('disconnect', () => {
    void onShutdown().finally(() => process.exit(1));
    setTimeout(() => process.exit(1), 10_000).unref();
  });
  process.on('message', (raw) => {
    const message = raw as Record<string, unknown> & { id?: number; type: string };
    if (message.type === 'shutdown') {
      void onShutdown().then(
        () => process.exit(0),
        (error: Error) => {
          console.error(error);
          process.exit(1);
        },
      );
      return;
    }
    handler(message).then(
      (reply) => process.send!({ ...reply, id: message.id, type: `${message.type}:reply` }),
      (error: Error) =>
        process.send!({ id: message.id, type: `${message.type}:reply`, error: error.stack ?? error.message }),
    );
  });
}
