import { posix } from 'node:path';
import { z } from 'zod';
import { BACKENDS, DEFAULT_BACKEND } from '../../adapters/index.ts';

const MiB = 1024 * 1024;

export const functionName = z
  .string()
  .regex(/^[a-z][a-z0-9-]{0,62}$/, 'must be 1-63 characters of a-z, 0-9 and "-", starting with a letter');

const identifier = z
  .string()
  .regex(
    /^[a-z][a-z0-9_-]{0,62}$/,
    'must be 1-63 characters of a-z, 0-9, "_" and "-", starting with a letter',
  );

export const versionString = z
  .string()
  .regex(
    /^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$/,
    'must be 1-64 characters of letters, digits, ".", "+", "_" and "-"',
  );

/** A file path inside the bundle: relative, normalized, and unable to leave the bundle root. */
export const bundlePath = z
  .string()
  .min(1)
  .max(255)
  .refine((p) => !p.includes('\\') && !p.includes('\0'), 'must not contain backslashes or NUL')
  .refine((p) => !p.startsWith('/'), 'must be relative to the bundle root')
  .refine((p) => !p.split('/').includes('..'), 'must not contain ".." segments')
  .refine(
    (p) => posix.normalize(p) === p && p !== '.' && !p.startsWith('./') && !p.endsWith('/'),
    'must be a normalized path',
  );

const intRange = (min: number, max: number) => z.number().int().min(min).max(max);

const envName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'must be a valid environment variable name');

/** A host the anchor may reach: `host`, `host:port`, or `*.suffix`. */
const networkHost = z
  .string()
  .regex(
    /^(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*(:[0-9]{1,5})?$/,
    'must be a host name, host:port, or *.domain',
  );

const anchorLimits = z
  .strictObject({
    memoryMb: intRange(16, 4096).default(128),
    cpuMs: intRange(1, 600_000).default(5_000),
    timeoutMs: intRange(1, 600_000).default(10_000),
  })
  .prefault({});

export const anchorSchema = z.strictObject({
  entry: bundlePath,
  limits: anchorLimits,
  vars: z.record(envName, z.string().max(4096)).default({}),
  network: z.strictObject({ allow: z.array(networkHost).max(64).default([]) }).prefault({}),
});

const imageCommon = {
  entry: bundlePath,
  /** Further files the stage reads; the entry is always included. */
  files: z.array(bundlePath).max(256).default([]),
  args: z.array(z.string().max(1024)).max(64).default([]),
};

export const stageImageSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('executable'), ...imageCommon }),
  z.strictObject({
    kind: z.literal('script'),
    interpreter: z.enum(['node', 'python3', 'sh']),
    ...imageCommon,
  }),
  z.strictObject({ kind: z.literal('wasm'), ...imageCommon }),
]);

const stageLimits = z
  .strictObject({
    memoryMb: intRange(8, 4096).default(64),
    cpuMs: intRange(1, 600_000).default(2_000),
    timeoutMs: intRange(1, 600_000).default(5_000),
    maxRequestBytes: intRange(1, 64 * MiB).default(MiB),
    maxResponseBytes: intRange(1, 64 * MiB).default(MiB),
  })
  .prefault({});

const sha256Digest = z.string().regex(/^sha256:[0-9a-f]{64}$/, 'must be "sha256:" followed by 64 hex digits');

/**
 * Confidentiality at rest: the request, response and log of a stage are sealed with the tenant's data
 * key unless listed here as public (stored in clear, readable by the host operator). Digests, metadata
 * and evidence are always in clear: the evidence covers digests, not plaintext.
 */
export const confidentialitySchema = z
  .strictObject({
    public: z
      .array(z.enum(['request', 'response', 'log']))
      .max(3)
      .default([]),
  })
  .prefault({});

/** How long the function's invocations and their artifacts are kept; absent: until deleted. */
export const retentionSchema = z.strictObject({ days: intRange(1, 36_500) });

export const stageSchema = z.strictObject({
  name: identifier,
  backend: z.enum(BACKENDS).default(DEFAULT_BACKEND),
  image: stageImageSchema,
  mode: z.enum(['oneshot', 'persistent']).default('oneshot'),
  limits: stageLimits,
  /** A JSON Schema that every request to this stage must satisfy (requests are then JSON). */
  requestSchema: z.record(z.string(), z.unknown()).optional(),
  confidentiality: confidentialitySchema,
  /**
   * Sealed requests (docs/security.md): `required` refuses plaintext requests; `publicFields` names the
   * top-level request fields a client may also show in clear to the anchor (the enclave checks that they
   * equal the sealed ones). The request schema applies to plaintext requests only.
   */
  sealing: z
    .strictObject({
      required: z.boolean().default(false),
      publicFields: z.array(z.string().min(1).max(64)).max(64).default([]),
    })
    .optional(),
  /**
   * Secrets the tenant uploads sealed to the key broker (docs/security.md, "Key release"), released to
   * each enclave of this stage after attestation and before the stage program starts; the stage finds
   * each as EBCC_SECRET_<NAME>. A declared secret that is refused fails the enclave's start. `optional`
   * only lets the stage start while the tenant has uploaded no secret of that name: it never excuses a
   * refusal. Undeclared secrets are never asked for.
   */
  secrets: z
    .array(
      z.strictObject({
        name: z
          .string()
          .regex(/^[a-z][a-z0-9-]{0,63}$/, 'must be lower-case letters, digits and "-", from a letter'),
        optional: z.boolean().default(false),
      }),
    )
    .max(16)
    .default([])
    .refine((list) => new Set(list.map((s) => s.name)).size === list.length, 'secret names must be unique'),
  /** Pinned reference values: deploy is refused when the computed ones differ. */
  reference: z
    .strictObject({
      imageDigest: sha256Digest.optional(),
      measurement: z
        .strictObject({ alg: z.string().min(1).max(32), value: z.string().regex(/^[0-9a-f]{2,256}$/) })
        .optional(),
    })
    .optional(),
});

export const poolSchema = z
  .strictObject({
    minWarm: intRange(0, 1000).default(0),
    maxInstances: intRange(1, 1000).default(4),
    idleTimeoutMs: intRange(1_000, 86_400_000).default(300_000),
    concurrent: z.boolean().default(false),
    prewarm: z.boolean().default(false),
  })
  .prefault({})
  .refine((p) => p.minWarm <= p.maxInstances, {
    message: 'minWarm must not exceed maxInstances',
    path: ['minWarm'],
  });

const retrySchema = z
  .strictObject({
    attempts: intRange(1, 100).default(3),
    backoff: z
      .strictObject({
        type: z.enum(['exponential', 'fixed']).default('exponential'),
        delayMs: intRange(0, 3_600_000).default(1_000),
      })
      .prefault({}),
  })
  .prefault({});

const routePath = z
  .string()
  .max(200)
  .regex(/^\/[A-Za-z0-9._~\-/:*]*$/, 'must be an absolute URL path of unreserved characters, ":param" or "*"')
  .refine((p) => !p.split('/').includes('..'), 'must not contain ".." segments')
  .refine((p) => !/^\/(v1|fn|healthz|readyz|metrics)(\/|$)/.test(p), 'must not shadow a gateway route');

/** The request path the anchor sees for a queued item (POSTed there as JSON). */
const jobPath = z
  .string()
  .max(200)
  .regex(/^\/[A-Za-z0-9._~\-/]*$/, 'must be an absolute URL path of unreserved characters')
  .refine((p) => !p.split('/').includes('..'), 'must not contain ".." segments')
  .default('/');

const cronExpression = z.string().regex(/^(\S+\s+){4,5}\S+$/, 'must be a cron expression of 5 or 6 fields');

export const triggersSchema = z
  .strictObject({
    http: z.strictObject({ route: routePath.optional(), public: z.boolean().default(false) }).prefault({}),
    queue: z
      .strictObject({
        name: identifier,
        concurrency: intRange(1, 256).default(1),
        path: jobPath,
        retry: retrySchema,
      })
      .optional(),
    cron: z
      .array(
        z.strictObject({
          schedule: cronExpression,
          timezone: z.string().max(64).optional(),
          input: z.unknown().optional(),
          path: jobPath,
          retry: retrySchema,
        }),
      )
      .max(16)
      .default([]),
  })
  .prefault({});

export const manifestSchema = z
  .strictObject({
    $schema: z.string().optional(),
    schemaVersion: z.literal(1),
    name: functionName,
    version: versionString,
    description: z.string().max(1024).optional(),
    anchor: anchorSchema,
    stages: z.array(stageSchema).min(1).max(16),
    pool: poolSchema,
    triggers: triggersSchema,
    retention: retentionSchema.optional(),
  })
  .superRefine((manifest, ctx) => {
    const seen = new Set<string>();
    manifest.stages.forEach((stage, index) => {
      if (seen.has(stage.name)) {
        ctx.addIssue({
          code: 'custom',
          message: `duplicate stage name "${stage.name}"`,
          path: ['stages', index, 'name'],
        });
      }
      seen.add(stage.name);
      if (stage.requestSchema) {
        try {
          z.fromJSONSchema(stage.requestSchema as Parameters<typeof z.fromJSONSchema>[0]);
        } catch (error) {
          ctx.addIssue({
            code: 'custom',
            message: `not a usable JSON Schema: ${(error as Error).message}`,
            path: ['stages', index, 'requestSchema'],
          });
        }
      }
    });
  });

export type Manifest = z.output<typeof manifestSchema>;
export type ManifestInput = z.input<typeof manifestSchema>;
export type StageManifest = Manifest['stages'][number];

export const MANIFEST_FILE = 'composite.json';
