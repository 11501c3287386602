import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { z } from 'zod';
import type { Config } from '../../config.ts';
import { callGateway } from '../client.ts';
import { CliError, EXIT } from '../errors.ts';
import { gatewayOptions } from './functions.ts';

const referenceValuesSchema = z.array(
  z.strictObject({
    stage: z.string().optional(),
    measurements: z
      .array(z.strictObject({ alg: z.string().min(1), value: z.string().regex(/^[0-9a-f]+$/) }))
      .min(1),
  }),
);

async function readJson(path: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new CliError(
      `cannot read ${what} ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
      EXIT.usage,
    );
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new CliError(`${what} ${path} is not JSON`, EXIT.usage);
  }
}

/** Reads trust-anchor files (JSON from `ebcc trust export`); CLI errors for missing or bad ones. */
export async function loadTrustAnchors(files: string[] | undefined) {
  const { parseTrustAnchor } = await import('../../evidence/index.ts');
  if (!files?.length) {
    throw new CliError(
      'verification needs a trust anchor: --trust-anchor FILE (from `ebcc trust export` on the host)',
      EXIT.usage,
    );
  }
  return Promise.all(
    files.map(async (file) => {
      try {
        return parseTrustAnchor(await readJson(file, 'trust anchor'));
      } catch (error) {
        if (error instanceof CliError) throw error;
        throw new CliError(`${file}: ${(error as Error).message}`, EXIT.usage);
      }
    }),
  );
}

/**
 * Trust anchors for `ebcc verify`: the built-in kinds, plus anchors of evidence formats that backends
 * register (adapters/index.ts), passed on as they are. A file may hold one anchor or the list
 * `ebcc trust export` writes when several backends have one.
 */
export async function loadVerifyAnchors(files: string[] | undefined) {
  const { parseTrustAnchor, isForeignTrustAnchor } = await import('../../evidence/index.ts');
  await import('../../../adapters/index.ts');
  if (!files?.length) return { anchors: await loadTrustAnchors(files), foreignAnchors: [] };
  const anchors = [];
  const foreignAnchors: unknown[] = [];
  for (const file of files) {
    const json = await readJson(file, 'trust anchor');
    const list = Array.isArray(json)
      ? json.map((item: unknown) => (item as { anchor?: unknown } | null)?.anchor ?? item)
      : [json];
    for (const anchor of list) {
      if (isForeignTrustAnchor(anchor)) {
        foreignAnchors.push(anchor);
        continue;
      }
      try {
        anchors.push(parseTrustAnchor(anchor));
      } catch (error) {
        throw new CliError(`${file}: ${(error as Error).message}`, EXIT.usage);
      }
    }
  }
  return { anchors, foreignAnchors };
}

/** Prints a key appraisal; sets a failing exit code unless the key is trusted. */
export function reportKeyVerdict(
  verdict: {
    trusted: boolean;
    appraisal: { status: string; reasons: { check: string; ok: boolean; detail: string }[] };
  },
  json: boolean | undefined,
  document?: unknown,
): void {
  if (json)
    process.stdout.write(`${JSON.stringify({ ...verdict, ...(document ? { document } : {}) }, null, 2)}\n`);
  else {
    process.stdout.write(`${verdict.trusted ? 'trusted' : 'not trusted'} (${verdict.appraisal.status})\n`);
    for (const r of verdict.appraisal.reasons.filter((x) => !x.ok))
      process.stdout.write(`  ${r.check}: ${r.detail}\n`);
  }
  if (!verdict.trusted) process.exitCode = EXIT.failed;
}

async function fetchBundle(program: Command, invocationId: string): Promise<unknown> {
  const { body } = await callGateway(
    gatewayOptions(program),
    'GET',
    `/v1/invocations/${encodeURIComponent(invocationId)}/evidence`,
  );
  return body;
}

/** Offline verification and export of evidence, and the operator's trust anchors. */
export function registerEvidenceCommands(program: Command, configFrom: () => Config): void {
  program
    .command('export <invocation-id>')
    .description(
      'write a self-contained evidence bundle (artifacts + evidence) that `ebcc verify` checks anywhere',
    )
    .option('-o, --output <file>', 'where to write it (default: stdout)')
    .action(async (id: string, opts: { output?: string }) => {
      const text = `${JSON.stringify(await fetchBundle(program, id), null, 2)}\n`;
      if (opts.output) await writeFile(opts.output, text);
      else process.stdout.write(text);
    });

  program
    .command('verify <invocation-id-or-file>')
    .description(
      "verify an invocation's evidence offline and print an attestation result (IETF EAR); exit 0 only if affirming. A file holding a stage key (from `ebcc key -o`) is appraised as one",
    )
    .option('--trust-anchor <file...>', 'trusted device roots (JSON from `ebcc trust export`)')
    .option(
      '--reference-values <file>',
      'accepted measurements: [{ "stage"?: name, "measurements": [{ "alg", "value" }] }]',
    )
    .option('--nonce <hex>', 'the nonce the caller sent; every execution must carry it')
    .option(
      '--allow-sim',
      'accept evidence rooted in a software root (the sim backend), which no hardware protects',
    )
    .option('--json', 'print the full EAR result as JSON')
    .action(
      async (
        target: string,
        opts: {
          trustAnchor?: string[];
          referenceValues?: string;
          nonce?: string;
          allowSim?: boolean;
          json?: boolean;
        },
      ) => {
        const { verifyBundle, failedChecks } = await import('../../evidence/index.ts');
        const { anchors, foreignAnchors } = await loadVerifyAnchors(opts.trustAnchor);
        let referenceValues;
        if (opts.referenceValues) {
          const parsed = referenceValuesSchema.safeParse(
            await readJson(opts.referenceValues, 'reference values'),
          );
          if (!parsed.success)
            throw new CliError(`invalid reference values: ${parsed.error.issues[0]?.message}`, EXIT.usage);
          referenceValues = parsed.data;
        }
        if (opts.nonce !== undefined && !/^(?:[0-9a-fA-F]{2}){8,64}$/.test(opts.nonce)) {
          throw new CliError('--nonce must be 8 to 64 bytes of hex', EXIT.usage);
        }
        const bundle = existsSync(target)
          ? await readJson(target, 'evidence bundle')
          : await fetchBundle(program, target);
        if ((bundle as { format?: unknown } | null)?.format === 'ebcc-enclave-key/1') {
          const { verifyEnclaveKey } = await import('../../client/index.ts');
          const verdict = verifyEnclaveKey(bundle, {
            trustAnchors: anchors,
            referenceValues,
            allowSim: Boolean(opts.allowSim),
          });
          reportKeyVerdict(verdict, opts.json);
          return;
        }
        const result = verifyBundle(bundle, {
          trustAnchors: anchors,
          foreignAnchors,
          referenceValues,
          nonce: opts.nonce ? Buffer.from(opts.nonce, 'hex') : undefined,
          allowSim: Boolean(opts.allowSim),
        });
        const status = result['ear.status'];
        if (opts.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
        else {
          process.stdout.write(`${status}\n`);
          for (const line of failedChecks(result)) process.stdout.write(`  ${line}\n`);
        }
        if (status !== 'affirming') process.exitCode = EXIT.failed;
      },
    );

  program
    .command('key <function> <stage>')
    .description(
      "fetch a stage enclave's encryption key and verify the evidence binding it (exit 0 only if trusted)",
    )
    .option('--trust-anchor <file...>', 'trusted device roots (JSON from `ebcc trust export`)')
    .option('--allow-sim', 'accept a software root (the sim backend), which no hardware protects')
    .option('-o, --output <file>', 'also write the key document (for `ebcc verify <file>`)')
    .option('--json', 'print the appraisal and the key document as JSON')
    .action(
      async (
        fn: string,
        stage: string,
        opts: { trustAnchor?: string[]; allowSim?: boolean; output?: string; json?: boolean },
      ) => {
        const anchors = await loadTrustAnchors(opts.trustAnchor);
        const { body } = await callGateway(
          gatewayOptions(program),
          'GET',
          `/v1/functions/${encodeURIComponent(fn)}/stages/${encodeURIComponent(stage)}/key`,
        );
        if (opts.output) await writeFile(opts.output, `${JSON.stringify(body, null, 2)}\n`);
        const { verifyEnclaveKey } = await import('../../client/index.ts');
        reportKeyVerdict(
          verifyEnclaveKey(body, { trustAnchors: anchors, allowSim: Boolean(opts.allowSim) }),
          opts.json,
          body,
        );
      },
    );

  const trust = program.command('trust').description('trust anchors of this installation (operator side)');
  trust
    .command('export')
    .description(
      'print the trust anchors verifiers need (for sim: the per-installation software device root)',
    )
    .option('-o, --output <file>', 'write to a file instead of stdout')
    .action(async (opts: { output?: string }) => {
      const { configureAdapters, trustAnchors } = await import('../../../adapters/index.ts');
      configureAdapters({ dataDir: configFrom().home });
      const anchors = trustAnchors();
      if (!anchors.length)
        throw new CliError('no backend on this host has a trust anchor to export', EXIT.failed);
      // One anchor is written as itself, so that `--trust-anchor` takes the file directly.
      const text = `${JSON.stringify(anchors.length === 1 ? anchors[0]!.anchor : anchors, null, 2)}\n`;
      if (opts.output) await writeFile(opts.output, text, { mode: 0o644 });
      else process.stdout.write(text);
    });
  trust
    .command('rotate')
    .description(
      'swap the software device root for a new one (the old one is kept, retired); prints the new anchor',
    )
    .action(async () => {
      const { configureAdapters, rotateTrustAnchors } = await import('../../../adapters/index.ts');
      configureAdapters({ dataDir: configFrom().home });
      const rotated = rotateTrustAnchors();
      if (!rotated.length)
        throw new CliError('no backend on this host has a software root to rotate', EXIT.failed);
      process.stdout.write(
        `${JSON.stringify(rotated.length === 1 ? rotated[0]!.anchor : rotated, null, 2)}\n`,
      );
    });
}
