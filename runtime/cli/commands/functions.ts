import { createReadStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Command } from 'commander';
import { callGateway, clientOptions, type ClientOptions } from '../client.ts';
import { CliError, EXIT } from '../errors.ts';
import { printJsonOrTable } from '../output.ts';

export function gatewayOptions(program: Command): ClientOptions {
  const { url, token } = program.opts<{ url: string; token?: string }>();
  const parsed = clientOptions.safeParse({ url, token: token || undefined });
  if (!parsed.success) throw new CliError(`invalid --url: ${parsed.error.issues[0]?.message}`, EXIT.usage);
  return parsed.data;
}

const print = (value: unknown): void => {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
};

export function registerFunctionCommands(program: Command): void {
  program
    .command('deploy <source>')
    .description('deploy a function: a directory (packed into a bundle) or a .tar.gz bundle')
    .option('--json', 'print JSON')
    .action(async (source: string, opts: { json?: boolean }) => {
      const client = gatewayOptions(program);
      const info = await stat(source).catch(() => {
        throw new CliError(`${source} does not exist`, EXIT.usage);
      });
      let archive = source;
      let scratch: string | undefined;
      if (info.isDirectory()) {
        scratch = await mkdtemp(join(tmpdir(), 'ebcc-pack-'));
        archive = join(scratch, 'bundle.tgz');
        try {
          const { packDirectory } = await import('../../bundle/archive.ts');
          await packDirectory(source, archive);
        } catch (error) {
          await rm(scratch, { recursive: true, force: true });
          throw new CliError(`cannot pack ${source}: ${(error as Error).message}`, EXIT.usage);
        }
      }
      try {
        const { size } = await stat(archive);
        const { status, body } = await callGateway(client, 'POST', '/v1/functions', {
          body: Readable.toWeb(createReadStream(archive)) as ReadableStream,
          headers: { 'content-type': 'application/gzip', 'content-length': String(size) },
        });
        const result = body as {
          function: string;
          version: string;
          versionDigest: string;
          stages: {
            name: string;
            backend: string;
            imageDigest: string;
            measurement: { alg: string; value: string } | null;
          }[];
        };
        if (opts.json) return print(result);
        process.stdout.write(
          `${status === 201 ? 'deployed' : 'already deployed'} ${result.function}@${result.version} (${result.versionDigest})\n`,
        );
        for (const s of result.stages) {
          const m = s.measurement
            ? `${s.measurement.alg}:${s.measurement.value.slice(0, 32)}…`
            : 'no backend measurement';
          process.stdout.write(`  stage ${s.name} [${s.backend}] image ${s.imageDigest}  ${m}\n`);
        }
      } finally {
        if (scratch) await rm(scratch, { recursive: true, force: true });
      }
    });

  const fns = program.command('functions').description('list and inspect deployed functions');
  fns
    .command('list', { isDefault: true })
    .description('list your functions')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const { body } = await callGateway(gatewayOptions(program), 'GET', '/v1/functions');
      printJsonOrTable(opts.json, (body as { functions: Record<string, unknown>[] }).functions, [
        'name',
        'activeVersion',
        'versions',
        'versionDigest',
      ]);
    });
  fns
    .command('show <name>')
    .description('a function with its versions and stage measurements (JSON)')
    .action(async (name: string) => {
      print(
        (await callGateway(gatewayOptions(program), 'GET', `/v1/functions/${encodeURIComponent(name)}`)).body,
      );
    });
  fns
    .command('rollback <name>')
    .description('make an earlier version active (default: the one before the active one)')
    .option('--to <version>', 'the version to activate')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { to?: string; json?: boolean }) => {
      const { body } = await callGateway(
        gatewayOptions(program),
        'POST',
        `/v1/functions/${encodeURIComponent(name)}/rollback`,
        {
          body: JSON.stringify(opts.to ? { version: opts.to } : {}),
          headers: { 'content-type': 'application/json' },
        },
      );
      if (opts.json) return print(body);
      const r = body as { function: string; activeVersion: string };
      process.stdout.write(`${r.function} now serves version ${r.activeVersion}\n`);
    });
  fns
    .command('delete <name>')
    .description('delete a function and all its versions (refused while instances run, unless --force)')
    .option('--force', 'stop and delete its instances too')
    .action(async (name: string, opts: { force?: boolean }) => {
      await callGateway(
        gatewayOptions(program),
        'DELETE',
        `/v1/functions/${encodeURIComponent(name)}${opts.force ? '?force=true' : ''}`,
      );
      process.stdout.write(`deleted ${name}\n`);
    });
}
