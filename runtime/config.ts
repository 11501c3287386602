import { resolve } from 'node:path';
import { z } from 'zod';

const MiB = 1024 * 1024;

const envSchema = z.object({
  EBCC_HOME: z.string().min(1).default('.ebcc'),
  EBCC_DB_URL: z
    .string()
    .regex(/^(file:|libsql:|https?:|wss?:)/, 'must be a file:, libsql:, http(s): or ws(s): URL')
    .optional(),
  EBCC_DB_AUTH_TOKEN: z.string().optional(),
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL')
    .default('redis://127.0.0.1:6379'),
  EBCC_HOST: z.string().default('127.0.0.1'),
  EBCC_PORT: z.coerce.number().int().min(0).max(65535).default(8787),
  EBCC_TLS_CERT: z.string().optional(),
  EBCC_TLS_KEY: z.string().optional(),
  EBCC_MAX_BUNDLE_BYTES: z.coerce
    .number()
    .int()
    .min(1024)
    .max(1024 * MiB)
    .default(64 * MiB),
  /** The key-encryption key file (32 bytes, mode 0600); made on first start when it is the default one. */
  EBCC_KEK_FILE: z.string().min(1).optional(),
  /** How often the retention sweep runs (a BullMQ repeatable job). */
  EBCC_RETENTION_INTERVAL_MS: z.coerce.number().int().min(1_000).max(86_400_000).default(3_600_000),
  EBCC_QUEUE_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be 1-64 characters of letters, digits, "_", "." and "-"')
    .default('bull'),
  EBCC_BATCH_WORKERS: z.enum(['0', '1']).default('1'),
  EBCC_BATCH_CONCURRENCY: z.coerce.number().int().min(1).max(1024).default(16),
  EBCC_BATCH_LOCK_MS: z.coerce.number().int().min(1_000).max(3_600_000).default(30_000),
  /** How long a request waits for an instance of a pool at its maximum before 429. */
  EBCC_POOL_MAX_WAIT_MS: z.coerce.number().int().min(0).max(600_000).default(5_000),
  EBCC_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  EBCC_MAX_CONNECTIONS: z.coerce.number().int().min(1).max(1_000_000).default(16_384),
  EBCC_HEADERS_TIMEOUT_MS: z.coerce.number().int().min(100).max(600_000).default(10_000),
  EBCC_REQUEST_TIMEOUT_MS: z.coerce.number().int().min(100).max(3_600_000).default(300_000),
  EBCC_ANCHOR_EXECUTOR: z.enum(['process', 'isolate']).default('process'),
  EBCC_ISOLATES_PER_HOST: z.coerce.number().int().min(1).max(10_000).default(128),
});

export interface Config {
  home: string;
  dbUrl: string;
  dbAuthToken: string | undefined;
  redisUrl: string;
  host: string;
  port: number;
  tls: { cert: string; key: string } | undefined;
  maxBundleBytes: number;
  /** The KEK file; `create` only for the default path under the home (a configured one must exist). */
  kek: { file: string; create: boolean };
  retentionIntervalMs: number;
  logLevel: z.output<typeof envSchema>['EBCC_LOG_LEVEL'];
  /** What one client may hold of the server: connections, and how long it may take to send a request. */
  connections: { max: number; headersTimeoutMs: number; requestTimeoutMs: number };
  /** BullMQ key prefix of every queue (BullMQ's own default, so that plain producers need no setting). */
  queuePrefix: string;
  /** Whether this process runs the batch workers (queue, batch and cron jobs) besides serving. */
  batchWorkers: boolean;
  batchConcurrency: number;
  /** A dead worker's jobs run again after about this long. */
  batchLockMs: number;
  /** How long a caller waits for a busy pool at its maximum before 429. */
  poolMaxWaitMs: number;
  /**
   * How anchors run: `process` (one sandboxed process each: the default and the strongest isolation)
   * or `isolate` (V8 isolates, many per sandboxed host process of one function version: denser).
   */
  anchorExecutor: 'process' | 'isolate';
  /** With the isolate executor: anchors one host process serves before another is started. */
  isolatesPerHost: number;
}

export class ConfigError extends Error {}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Config> = {}): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const detail = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new ConfigError(`invalid environment: ${detail}`);
  }
  const e = parsed.data;
  if (Boolean(e.EBCC_TLS_CERT) !== Boolean(e.EBCC_TLS_KEY)) {
    throw new ConfigError('invalid environment: EBCC_TLS_CERT and EBCC_TLS_KEY must be given together');
  }
  const home = resolve(overrides.home ?? e.EBCC_HOME);
  return {
    home,
    dbUrl: e.EBCC_DB_URL ?? `file:${resolve(home, 'ebcc.db')}`,
    dbAuthToken: e.EBCC_DB_AUTH_TOKEN,
    redisUrl: e.REDIS_URL,
    host: e.EBCC_HOST,
    port: e.EBCC_PORT,
    tls: e.EBCC_TLS_CERT && e.EBCC_TLS_KEY ? { cert: e.EBCC_TLS_CERT, key: e.EBCC_TLS_KEY } : undefined,
    maxBundleBytes: e.EBCC_MAX_BUNDLE_BYTES,
    kek: e.EBCC_KEK_FILE
      ? { file: resolve(e.EBCC_KEK_FILE), create: false }
      : { file: resolve(home, 'keys', 'kek'), create: true },
    retentionIntervalMs: e.EBCC_RETENTION_INTERVAL_MS,
    logLevel: e.EBCC_LOG_LEVEL,
    connections: {
      max: e.EBCC_MAX_CONNECTIONS,
      headersTimeoutMs: e.EBCC_HEADERS_TIMEOUT_MS,
      requestTimeoutMs: e.EBCC_REQUEST_TIMEOUT_MS,
    },
    queuePrefix: e.EBCC_QUEUE_PREFIX,
    batchWorkers: e.EBCC_BATCH_WORKERS === '1',
    batchConcurrency: e.EBCC_BATCH_CONCURRENCY,
    batchLockMs: e.EBCC_BATCH_LOCK_MS,
    poolMaxWaitMs: e.EBCC_POOL_MAX_WAIT_MS,
    anchorExecutor: e.EBCC_ANCHOR_EXECUTOR,
    isolatesPerHost: e.EBCC_ISOLATES_PER_HOST,
    ...overrides,
  };
}
