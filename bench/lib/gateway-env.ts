/** A gateway child process with its own home and database, plus the benchmark functions deployed on it. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChild, type ChildServer } from './child.ts';
import { deployFunction } from './deploy.ts';

export const BENCH_DIR = join(import.meta.dirname, '..');
export const FUNCTIONS_DIR = join(BENCH_DIR, 'functions');

export interface GatewayReady {
  url: string;
  adminToken: string;
  invokeToken: string;
  synchronous: number;
  journalMode: string;
}

export interface InvocationTimings {
  id: string;
  fn: string;
  start: string;
  timings: Record<string, number>;
}

export interface DbStats {
  invocations: { fn: string; start: string; status: string; n: number }[];
  executions: { fn: string; n: number; signed: number }[];
  timings: InvocationTimings[];
}

export interface GatewayEnv {
  child: ChildServer<GatewayReady>;
  home: string;
  deploy(
    dir: string,
    edit?: (manifest: Record<string, any>) => void,
  ): Promise<{ name: string; version: string }>;
  stats(): Promise<DbStats>;
  close(): Promise<void>;
}

export async function startGatewayEnv(options: {
  redisUrl: string;
  logFile: string;
  trace?: boolean;
  nodeArgs?: string[];
  /** More environment for the gateway process (e.g. its own sandbox uid range). */
  env?: Record<string, string>;
}): Promise<GatewayEnv> {
  const home = await mkdtemp(join(tmpdir(), 'ebcc-bench-home-'));
  const child = await startChild<GatewayReady>(join(BENCH_DIR, 'servers', 'gateway.ts'), {
    env: {
      ...options.env,
      BENCH_HOME: home,
      REDIS_URL: options.redisUrl,
      BENCH_TRACE: options.trace ? '1' : '0',
    },
    logFile: options.logFile,
    nodeArgs: options.nodeArgs,
  }).catch(async (error: Error) => {
    await rm(home, { recursive: true, force: true });
    throw error;
  });
  let bundles = 0;
  return {
    child,
    home,
    deploy: (dir, edit) =>
      deployFunction(
        child.ready.url,
        child.ready.adminToken,
        dir,
        join(home, `bundle-${bundles++}.tgz`),
        edit,
      ),
    stats: async () => {
      const reply = await child.ask<DbStats>({ type: 'db-stats' });
      return {
        invocations: reply.invocations.map((r) => ({ ...r, n: Number(r.n) })),
        executions: reply.executions.map((r) => ({ ...r, n: Number(r.n), signed: Number(r.signed) })),
        timings: reply.timings,
      };
    },
    close: async () => {
      await child.stop();
      await rm(home, { recursive: true, force: true });
    },
  };
}
