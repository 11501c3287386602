import { sql } from 'drizzle-orm';
import { blob, index, integer, primaryKey, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';

const now = sql`(cast(unixepoch('subsec') * 1000 as integer))`;
const createdAt = () => integer('created_at', { mode: 'number' }).notNull().default(now);

export const tenants = sqliteTable('tenants', {
  id: text('id').primaryKey(),
  name: text('name').notNull().unique(),
  createdAt: createdAt(),
});

export const apiTokens = sqliteTable(
  'api_tokens',
  {
    id: text('id').primaryKey(),
    tenantId: text('tenant_id')
      .notNull()
      .references(() => tenants.id),
    name: text('name').notNull(),
    /** SHA-256 of the secret part; the secret itself is never stored. */
    secretHash: text('secret_hash').notNull(),
    scopes: text('scopes', { mode: 'json' }).$type<string[]>().notNull(),
    expiresAt: integer('expires_at', { mode: 'number' }),
    revokedAt: integer('revoked_at', { mode: 'number' }),
    lastUsedAt: integer('last_used_at', { mode: 'number' }),
    createdAt: createdAt(),
  },
  (t) => [index('api_tokens_tenant').on(t.tenantId)],
);

/** Content-addressed bytes shared by every gateway and worker through the database itself. */
export const blobs = sqliteTable('blobs', {
  digest: text('digest').primaryKey(),
  size: integer('size', { mode: 'number' }).notNull(),
  data: blob('data', { mode: 'buffer' }).notNull(),
  createdAt: createdAt(),
});

export const functions = sqliteTable(
  'functions',
  {
    id: text('id').primaryKey(),
    tenantId: text('tenant_id')
      .notNull()
      .references(() => tenants.id),
    name: text('name').notNull(),
    activeVersionId: text('active_version_id'),
    createdAt: createdAt(),
    updatedAt: integer('updated_at', { mode: 'number' }).notNull().default(now),
  },
  (t) => [uniqueIndex('functions_name').on(t.name), index('functions_tenant').on(t.tenantId)],
);

export const functionVersions = sqliteTable(
  'function_versions',
  {
    id: text('id').primaryKey(),
    functionId: text('function_id')
      .notNull()
      .references(() => functions.id, { onDelete: 'cascade' }),
    version: text('version').notNull(),
    /** Digest of the uploaded archive, which is also kept as a blob. */
    bundleDigest: text('bundle_digest').notNull(),
    /** Digest over the canonical manifest and every file digest: the identity of what runs. */
    versionDigest: text('version_digest').notNull(),
    manifest: text('manifest', { mode: 'json' }).$type<Record<string, unknown>>().notNull(),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('function_versions_fn_version').on(t.functionId, t.version)],
);

export const versionFiles = sqliteTable(
  'version_files',
  {
    versionId: text('version_id')
      .notNull()
      .references(() => functionVersions.id, { onDelete: 'cascade' }),
    path: text('path').notNull(),
    mode: integer('mode', { mode: 'number' }).notNull(),
    size: integer('size', { mode: 'number' }).notNull(),
    blobDigest: text('blob_digest')
      .notNull()
      .references(() => blobs.digest),
  },
  (t) => [primaryKey({ columns: [t.versionId, t.path] })],
);

export const stages = sqliteTable(
  'stages',
  {
    versionId: text('version_id')
      .notNull()
      .references(() => functionVersions.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    backend: text('backend').notNull(),
    mode: text('mode', { enum: ['oneshot', 'persistent'] }).notNull(),
    imageDigest: text('image_digest').notNull(),
    measurementAlg: text('measurement_alg'),
    measurement: text('measurement'),
    /** Why no backend measurement was taken at deploy, when none was. */
    measurementNote: text('measurement_note'),
    config: text('config', { mode: 'json' }).$type<Record<string, unknown>>().notNull(),
  },
  (t) => [primaryKey({ columns: [t.versionId, t.name] })],
);

/** Composite instances and their OCI runtime state. */
export const instances = sqliteTable(
  'instances',
  {
    cid: text('cid').primaryKey(),
    tenantId: text('tenant_id').notNull(),
    functionId: text('function_id').notNull(),
    versionId: text('version_id')
      .notNull()
      .references(() => functionVersions.id),
    status: text('status', { enum: ['creating', 'created', 'running', 'stopped'] }).notNull(),
    pid: integer('pid', { mode: 'number' }),
    hostId: text('host_id').notNull(),
    bundlePath: text('bundle_path').notNull(),
    annotations: text('annotations', { mode: 'json' }).$type<Record<string, string>>().notNull().default({}),
    exitStatus: integer('exit_status', { mode: 'number' }),
    stopReason: text('stop_reason'),
    createdAt: createdAt(),
    startedAt: integer('started_at', { mode: 'number' }),
    stoppedAt: integer('stopped_at', { mode: 'number' }),
    lastUsedAt: integer('last_used_at', { mode: 'number' }),
  },
  (t) => [
    index('instances_function').on(t.functionId, t.status),
    index('instances_host').on(t.hostId, t.status),
  ],
);

/** Blocks of enclave ids handed to allocators; ids are never reused, even after a crash. */
export const eidBlocks = sqliteTable('eid_blocks', {
  start: integer('start', { mode: 'number' }).primaryKey(),
  end: integer('end', { mode: 'number' }).notNull(),
  owner: text('owner').notNull(),
  createdAt: createdAt(),
});

export const enclaves = sqliteTable(
  'enclaves',
  {
    eid: integer('eid', { mode: 'number' }).primaryKey(),
    cid: text('cid').notNull(),
    stage: text('stage').notNull(),
    backend: text('backend').notNull(),
    measurementAlg: text('measurement_alg').notNull(),
    measurement: text('measurement').notNull(),
    /** The enclave's own signing key (raw Ed25519), made inside the enclave. */
    publicKey: blob('public_key', { mode: 'buffer' }),
    /** The enclave's encryption key (raw X25519), made inside it and bound by its native evidence. */
    encryptionKey: blob('encryption_key', { mode: 'buffer' }),
    /** The backend's native evidence binding the enclave's key to its measurement. */
    nativeEvidence: blob('native_evidence', { mode: 'buffer' }),
    nativeFormat: text('native_format'),
    chainHead: text('chain_head'),
    lastSeq: integer('last_seq', { mode: 'number' }).notNull().default(0),
    finalCheckpoint: blob('final_checkpoint', { mode: 'buffer' }),
    createdAt: createdAt(),
    destroyedAt: integer('destroyed_at', { mode: 'number' }),
  },
  (t) => [index('enclaves_cid').on(t.cid)],
);

export const invocations = sqliteTable(
  'invocations',
  {
    id: text('id').primaryKey(),
    tenantId: text('tenant_id').notNull(),
    functionId: text('function_id').notNull(),
    versionId: text('version_id').notNull(),
    cid: text('cid'),
    trigger: text('trigger', { enum: ['http', 'queue', 'cron', 'batch'] }).notNull(),
    start: text('start', { enum: ['cold', 'warm'] }),
    status: text('status', { enum: ['running', 'ok', 'error'] }).notNull(),
    httpStatus: integer('http_status', { mode: 'number' }),
    error: text('error'),
    /** Anchor console output for this invocation, bounded. */
    console: text('console'),
    timings: text('timings', { mode: 'json' }).$type<Record<string, number>>(),
    startedAt: integer('started_at', { mode: 'number' }).notNull(),
    finishedAt: integer('finished_at', { mode: 'number' }),
  },
  (t) => [index('invocations_function').on(t.functionId, t.startedAt)],
);

/** One stage request: its artifacts (inline when small, else a blob digest) and its evidence. */
export const stageExecutions = sqliteTable(
  'stage_executions',
  {
    id: text('id').primaryKey(),
    invocationId: text('invocation_id').notNull(),
    cid: text('cid').notNull(),
    eid: integer('eid', { mode: 'number' }).notNull(),
    seq: integer('seq', { mode: 'number' }).notNull(),
    stage: text('stage').notNull(),
    backend: text('backend').notNull(),
    measurement: text('measurement').notNull(),
    requestDigest: text('request_digest').notNull(),
    requestInline: blob('request_inline', { mode: 'buffer' }),
    requestBlob: text('request_blob'),
    responseDigest: text('response_digest'),
    responseInline: blob('response_inline', { mode: 'buffer' }),
    responseBlob: text('response_blob'),
    log: blob('log', { mode: 'buffer' }),
    logDigest: text('log_digest'),
    metadata: text('metadata', { mode: 'json' }).$type<Record<string, unknown>>().notNull(),
    /** The metadata the enclave signed (its digest is in the evidence), exactly as it was signed. */
    boundMetadata: blob('bound_metadata', { mode: 'buffer' }),
    exitReason: text('exit_reason').notNull(),
    exitCode: integer('exit_code', { mode: 'number' }),
    evidence: blob('evidence', { mode: 'buffer' }),
    /** The tenant data key (data_keys.id) the sealed artifacts are encrypted with; null: all in clear. */
    sealedWith: text('sealed_with'),
    /** Which artifacts are sealed at rest (request, response, log); the others are stored in clear. */
    sealed: text('sealed', { mode: 'json' }).$type<string[]>(),
    /** Set by retention: the artifacts are gone, the evidence (digests, chain entry) is kept. */
    prunedAt: integer('pruned_at', { mode: 'number' }),
    createdAt: createdAt(),
  },
  (t) => [
    index('stage_executions_invocation').on(t.invocationId),
    uniqueIndex('stage_executions_eid_seq').on(t.eid, t.seq),
  ],
);

/**
 * Per-tenant data keys (DEKs) for artifacts sealed at rest, wrapped by the operator's key-encryption key.
 * Shredding clears `wrapped`: what the key sealed can never be opened again; the row says when.
 */
export const dataKeys = sqliteTable(
  'data_keys',
  {
    id: text('id').primaryKey(),
    tenantId: text('tenant_id')
      .notNull()
      .references(() => tenants.id),
    /** The KEK that wrapped it (provider id, not a secret). */
    kekId: text('kek_id').notNull(),
    wrapped: blob('wrapped', { mode: 'buffer' }),
    createdAt: createdAt(),
    shreddedAt: integer('shredded_at', { mode: 'number' }),
  },
  (t) => [index('data_keys_tenant').on(t.tenantId, t.shreddedAt)],
);

/** A batch submitted over the API: one function version, one job per item. */
export const batches = sqliteTable(
  'batches',
  {
    id: text('id').primaryKey(),
    tenantId: text('tenant_id').notNull(),
    functionId: text('function_id').notNull(),
    functionName: text('function_name').notNull(),
    /** The version active at submission: every item of the batch runs it. */
    versionId: text('version_id').notNull(),
    /** The request path the anchor sees for each item (each item is POSTed there as JSON). */
    path: text('path').notNull(),
    total: integer('total', { mode: 'number' }).notNull(),
    createdAt: createdAt(),
  },
  (t) => [index('batches_tenant').on(t.tenantId, t.createdAt)],
);

/**
 * One unit of queued work and its result; libSQL, not Redis, is its source of truth. The id is the
 * BullMQ job id and the idempotency key: a job run twice (a worker crash, a Redis loss) records one result.
 */
export const batchItems = sqliteTable(
  'batch_items',
  {
    id: text('id').primaryKey(),
    /** Null for jobs a BullMQ producer put on a function's queue directly, and for cron ticks. */
    batchId: text('batch_id'),
    seq: integer('seq', { mode: 'number' }).notNull(),
    tenantId: text('tenant_id').notNull(),
    functionId: text('function_id').notNull(),
    functionName: text('function_name').notNull(),
    versionId: text('version_id').notNull(),
    /** The request path the anchor sees; the item is POSTed there as JSON. */
    path: text('path').notNull(),
    /** The retry policy the item runs under (from the manifest of its version). */
    retry: text('retry', { mode: 'json' })
      .$type<{ attempts: number; backoff: { type: 'exponential' | 'fixed'; delayMs: number } }>()
      .notNull(),
    source: text('source', { enum: ['batch', 'queue', 'cron'] }).notNull(),
    /** The BullMQ queue the item's job is on. */
    queue: text('queue').notNull(),
    status: text('status', { enum: ['queued', 'succeeded', 'failed', 'dead'] }).notNull(),
    /** The item as JSON text; null when it was refused before it could run (too large, not JSON). */
    input: text('input'),
    attempts: integer('attempts', { mode: 'number' }).notNull().default(0),
    invocationId: text('invocation_id'),
    httpStatus: integer('http_status', { mode: 'number' }),
    resultType: text('result_type'),
    resultDigest: text('result_digest'),
    resultInline: blob('result_inline', { mode: 'buffer' }),
    resultBlob: text('result_blob'),
    /** Why the item failed (or, while it is still queued, why its last attempt failed). */
    error: text('error'),
    createdAt: createdAt(),
    finishedAt: integer('finished_at', { mode: 'number' }),
  },
  (t) => [
    uniqueIndex('batch_items_batch_seq').on(t.batchId, t.seq),
    index('batch_items_batch_status').on(t.batchId, t.status),
    index('batch_items_status').on(t.status, t.source),
  ],
);

/** Tenants' secrets, sealed to the key broker's attested key (the host never holds them in clear). */
export const sealedSecrets = sqliteTable(
  'sealed_secrets',
  {
    id: text('id').primaryKey(),
    tenantId: text('tenant_id').notNull(),
    functionId: text('function_id').notNull(),
    name: text('name').notNull(),
    /** The policy as the envelope shows it in clear: which stage, which measurements. */
    stage: text('stage').notNull(),
    policy: text('policy', { mode: 'json' }).notNull(),
    envelope: blob('envelope', { mode: 'buffer' }).notNull(),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('sealed_secrets_fn_name').on(t.functionId, t.name)],
);

/** Every release decision of the key broker, with the requester's evidence. */
export const keyReleases = sqliteTable(
  'key_releases',
  {
    id: text('id').primaryKey(),
    secretId: text('secret_id').notNull(),
    cid: text('cid').notNull(),
    eid: integer('eid', { mode: 'number' }).notNull(),
    stage: text('stage').notNull(),
    measurement: text('measurement').notNull(),
    released: integer('released', { mode: 'boolean' }).notNull(),
    reason: text('reason').notNull(),
    /** The requester's native evidence, as the broker appraised it. */
    nativeEvidence: blob('native_evidence', { mode: 'buffer' }).notNull(),
    createdAt: createdAt(),
  },
  (t) => [index('key_releases_secret').on(t.secretId)],
);

/**
 * Facts about this installation (one database) as a whole. `installation-id` names its keys and queues
 * in a Redis that other installations may share, so that none takes another's jobs or leases.
 */
export const installationMeta = sqliteTable('installation_meta', {
  key: text('key').primaryKey(),
  value: text('value').notNull(),
  createdAt: createdAt(),
});
