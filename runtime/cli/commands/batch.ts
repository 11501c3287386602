import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { Command } from 'commander';
import { z } from 'zod';
import { callGateway, type ClientOptions } from '../client.ts';
import { CliError, EXIT } from '../errors.ts';
import { gatewayOptions } from './functions.ts';

interface BatchStatus {
  id: string;
  function: string;
  total: number;
  counts: { queued: number; succeeded: number; failed: number; dead: number };
  done: number;
  percentDone: number;
  complete: boolean;
  failures: { item: string; seq: number; status: string; attempts: number; error: string | null }[];
}

const print = (value: unknown): void => {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
};

const BAR_WIDTH = 30;

/** One progress line: a bar in a terminal, redrawn in place; plain lines otherwise. */
export function progressLine(s: BatchStatus, tty: boolean): string {
  const { succeeded, failed, dead, queued } = s.counts;
  const counts = `${s.done}/${s.total} (${s.percentDone.toFixed(1)}%) ok ${succeeded} failed ${failed} dead ${dead} queued ${queued}`;
  if (!tty) return `batch ${s.id}: ${counts}`;
  const filled = Math.round((BAR_WIDTH * s.percentDone) / 100);
  return `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}] ${counts}`;
}

function summary(s: BatchStatus): string {
  const lines = [
    `batch ${s.id} (${s.function}): ${s.counts.succeeded} succeeded, ${s.counts.failed} failed, ${s.counts.dead} dead, ${s.counts.queued} queued of ${s.total}`,
  ];
  for (const f of s.failures)
    lines.push(`  #${f.seq} ${f.item} ${f.status} after ${f.attempts} attempt(s): ${f.error}`);
  return `${lines.join('\n')}\n`;
}

const seconds = z.coerce.number().positive().max(86_400);

async function status(client: ClientOptions, id: string): Promise<BatchStatus> {
  const { body } = await callGateway(client, 'GET', `/v1/batches/${encodeURIComponent(id)}?limit=1`);
  return body as BatchStatus;
}

/** Polls a batch until no item is queued, drawing progress on stderr; returns the final status. */
async function waitFor(
  client: ClientOptions,
  id: string,
  timeoutS: number,
  quiet: boolean,
): Promise<BatchStatus> {
  const tty = Boolean(process.stderr.isTTY);
  const deadline = Date.now() + timeoutS * 1000;
  let lastLine = '';
  let lastPrinted = 0;
  for (;;) {
    const s = await status(client, id);
    const line = progressLine(s, tty);
    if (!quiet && line !== lastLine) {
      if (tty) process.stderr.write(`\r\x1b[2K${line}`);
      else if (s.complete || Date.now() - lastPrinted >= 1_000) {
        process.stderr.write(`${line}\n`);
        lastPrinted = Date.now();
      }
      lastLine = line;
    }
    if (s.complete) {
      if (tty && !quiet) process.stderr.write('\n');
      return s;
    }
    if (Date.now() > deadline) {
      if (tty && !quiet) process.stderr.write('\n');
      throw new CliError(`batch ${id} is not done after ${timeoutS} s (${s.done}/${s.total})`, EXIT.failed);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

function finish(s: BatchStatus, json: boolean | undefined): void {
  if (json) print(s);
  else process.stdout.write(summary(s));
  if (s.counts.failed + s.counts.dead > 0) process.exitCode = EXIT.failed;
}

export function registerBatchCommands(program: Command): void {
  const batch = program
    .command('batch')
    .description('submit batches of inputs to a function and follow them');
  batch
    .command('submit <function> [file]')
    .description('submit a JSON array or NDJSON file (or stdin) of inputs: one job per item')
    .option('--ndjson', 'the input is NDJSON (the default for .ndjson/.jsonl files and stdin)')
    .option('--path <path>', 'request path the function sees for each item')
    .option('--wait', 'wait until every item has run, showing progress')
    .option('--timeout <seconds>', 'with --wait: give up after this long', '3600')
    .option('--json', 'print JSON')
    .action(
      async (
        fn: string,
        file: string | undefined,
        opts: { ndjson?: boolean; path?: string; wait?: boolean; timeout: string; json?: boolean },
      ) => {
        const client = gatewayOptions(program);
        const timeout = seconds.safeParse(opts.timeout);
        if (!timeout.success) throw new CliError(`invalid --timeout "${opts.timeout}"`, EXIT.usage);
        const ndjson = opts.ndjson ?? (file && file !== '-' ? /\.(ndjson|jsonl)$/i.test(file) : true);
        let body: ReadableStream;
        const headers: Record<string, string> = {
          'content-type': ndjson ? 'application/x-ndjson' : 'application/json',
        };
        if (file && file !== '-') {
          const info = await stat(file).catch(() => {
            throw new CliError(`${file} does not exist`, EXIT.usage);
          });
          headers['content-length'] = String(info.size);
          body = Readable.toWeb(createReadStream(file)) as ReadableStream;
        } else {
          body = Readable.toWeb(process.stdin) as ReadableStream;
        }
        const query = opts.path ? `?path=${encodeURIComponent(opts.path)}` : '';
        const { body: submitted } = await callGateway(
          client,
          'POST',
          `/v1/functions/${encodeURIComponent(fn)}/batches${query}`,
          { body, headers },
        );
        const s = submitted as { id: string; total: number; queued: number; refused: unknown[] };
        if (!opts.wait) {
          if (opts.json) print(submitted);
          else
            process.stdout.write(
              `${s.id}\nbatch ${s.id}: ${s.total} item(s), ${s.queued} queued, ${s.refused.length} refused\n`,
            );
          return;
        }
        if (!opts.json) process.stderr.write(`batch ${s.id}: ${s.total} item(s) submitted\n`);
        finish(await waitFor(client, s.id, timeout.data, false), opts.json);
      },
    );
  batch
    .command('status <id>')
    .description('show a batch: counts, percent done, failures with reasons')
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { json?: boolean }) => {
      const s = await status(gatewayOptions(program), id);
      if (opts.json) print(s);
      else process.stdout.write(`${progressLine(s, false)}\n${summary(s)}`);
    });
  batch
    .command('wait <id>')
    .description('wait until every item of a batch has run, showing a progress bar in a terminal')
    .option('--timeout <seconds>', 'give up after this long', '3600')
    .option('--quiet', 'no progress output')
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { timeout: string; quiet?: boolean; json?: boolean }) => {
      const timeout = seconds.safeParse(opts.timeout);
      if (!timeout.success) throw new CliError(`invalid --timeout "${opts.timeout}"`, EXIT.usage);
      finish(await waitFor(gatewayOptions(program), id, timeout.data, Boolean(opts.quiet)), opts.json);
    });
  batch
    .command('retry <id>')
    .description('run the dead items of a batch again (or one item, or failed ones too)')
    .option('--item <item>', 'only this item')
    .option('--include-failed', 'also items that failed permanently')
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { item?: string; includeFailed?: boolean; json?: boolean }) => {
      const client = gatewayOptions(program);
      const path = opts.item
        ? `/v1/batches/${encodeURIComponent(id)}/items/${encodeURIComponent(opts.item)}/retry`
        : `/v1/batches/${encodeURIComponent(id)}/retry${opts.includeFailed ? '?include=failed' : ''}`;
      const { body } = await callGateway(client, 'POST', path);
      const r = body as { requeued: number };
      if (opts.json) print(body);
      else process.stdout.write(`batch ${id}: ${r.requeued} item(s) queued again\n`);
    });
  batch
    .command('dead <function>')
    .description("list a function's dead items (from batches, its queue or its cron), or --retry them all")
    .option('--retry', 'run every dead item of the function again')
    .option('--json', 'print JSON')
    .action(async (fn: string, opts: { retry?: boolean; json?: boolean }) => {
      const client = gatewayOptions(program);
      const base = `/v1/functions/${encodeURIComponent(fn)}/dead-letters`;
      if (opts.retry) {
        const { body } = await callGateway(client, 'POST', `${base}/retry`);
        if (opts.json) print(body);
        else
          process.stdout.write(
            `${fn}: ${(body as { requeued: number }).requeued} dead item(s) queued again\n`,
          );
        return;
      }
      const { body } = await callGateway(client, 'GET', `${base}?limit=1000`);
      const items = (body as { items: { id: string; source: string; attempts: number; error: string }[] })
        .items;
      if (opts.json) print(body);
      else
        for (const i of items)
          process.stdout.write(`${i.id} ${i.source} after ${i.attempts} attempt(s): ${i.error}\n`);
    });
}
