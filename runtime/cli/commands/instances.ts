import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { callGateway } from '../client.ts';
import { CliError, EXIT } from '../errors.ts';
import { printJsonOrTable } from '../output.ts';
import { gatewayOptions } from './functions.ts';

const print = (value: unknown): void => {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
};
const path = (cid: string, rest = '') => `/v1/instances/${encodeURIComponent(cid)}${rest}`;
const json = (body: unknown) => ({
  body: JSON.stringify(body),
  headers: { 'content-type': 'application/json' },
});

/** The OCI-style lifecycle, run against the gateway: create, start, state, kill, delete, wait, ps. */
export function registerInstanceCommands(program: Command): void {
  program
    .command('create <function>')
    .description(
      'create a composite instance (anchor and stage enclaves prepared, not serving); prints its CID',
    )
    .option('--version <version>', 'a specific version (default: the active one)')
    .option('--annotation <key=value...>', 'annotations to record on the instance')
    .option('--json', 'print the OCI state as JSON')
    .action(async (fn: string, opts: { version?: string; annotation?: string[]; json?: boolean }) => {
      const annotations: Record<string, string> = {};
      for (const pair of opts.annotation ?? []) {
        const at = pair.indexOf('=');
        if (at < 1) throw new CliError(`invalid --annotation "${pair}": use key=value`, EXIT.usage);
        annotations[pair.slice(0, at)] = pair.slice(at + 1);
      }
      const { body } = await callGateway(
        gatewayOptions(program),
        'POST',
        '/v1/instances',
        json({ function: fn, version: opts.version, annotations }),
      );
      if (opts.json) return print(body);
      process.stdout.write(`${(body as { id: string }).id}\n`);
    });
  program
    .command('start <cid>')
    .description('start serving')
    .action(async (cid: string) => {
      await callGateway(gatewayOptions(program), 'POST', path(cid, '/start'));
    });
  program
    .command('state <cid>')
    .description('the OCI state of an instance (JSON)')
    .action(async (cid: string) =>
      print((await callGateway(gatewayOptions(program), 'GET', path(cid))).body),
    );
  program
    .command('kill <cid> [signal]')
    .description('send a signal to the anchor (default SIGTERM); stops live stage executions')
    .action(async (cid: string, signal: string | undefined) => {
      await callGateway(
        gatewayOptions(program),
        'POST',
        path(cid, '/kill'),
        json({ signal: signal ?? 'SIGTERM' }),
      );
    });
  program
    .command('delete <cid>')
    .description('delete a stopped instance and destroy its enclaves')
    .option('--force', 'kill it first if it is still running')
    .action(async (cid: string, opts: { force?: boolean }) => {
      await callGateway(gatewayOptions(program), 'DELETE', path(cid, opts.force ? '?force=true' : ''));
    });
  program
    .command('wait <cid>')
    .description('block until the instance stops; prints its exit status')
    .option('--timeout <seconds>', 'give up after this long (exit 1)', '300')
    .option('--json', 'print JSON')
    .action(async (cid: string, opts: { timeout: string; json?: boolean }) => {
      const seconds = Number(opts.timeout);
      if (!Number.isFinite(seconds) || seconds < 0)
        throw new CliError(`invalid --timeout "${opts.timeout}"`, EXIT.usage);
      const deadline = Date.now() + seconds * 1000;
      for (;;) {
        const slice = Math.min(60_000, Math.max(0, deadline - Date.now()));
        const { body } = await callGateway(
          gatewayOptions(program),
          'GET',
          path(cid, `/wait?timeout=${slice}`),
        );
        const result = body as { status: string; exitStatus: number | null; reason: string | null };
        if (result.status === 'stopped') {
          if (opts.json) return print(result);
          process.stdout.write(`${result.exitStatus ?? ''}\n`);
          return;
        }
        if (Date.now() >= deadline)
          throw new CliError(`instance ${cid} is still ${result.status} after ${seconds} s`, EXIT.failed);
      }
    });
  program
    .command('ps')
    .description('list your instances')
    .option('--json', 'print the OCI states as JSON')
    .action(async (opts: { json?: boolean }) => {
      const { body } = await callGateway(gatewayOptions(program), 'GET', '/v1/instances');
      const states = (
        body as {
          instances: { id: string; status: string; pid?: number; annotations: Record<string, string> }[];
        }
      ).instances;
      if (opts.json) return print(states);
      printJsonOrTable(
        false,
        states.map((s) => ({
          cid: s.id,
          function: `${s.annotations['ebcc.function']}@${s.annotations['ebcc.version']}`,
          status: s.status,
          pid: s.pid,
          enclaves: (JSON.parse(s.annotations['ebcc.enclaves'] ?? '[]') as { stage: string; eid: number }[])
            .map((e) => `${e.stage}=${e.eid}`)
            .join(','),
          created: s.annotations['ebcc.createdAt'],
        })),
        ['cid', 'function', 'status', 'pid', 'enclaves', 'created'],
      );
    });
  program
    .command('invoke <function>')
    .description('invoke a function over HTTP and print its response')
    .option('-d, --data <body>', 'request body')
    .option('--data-file <file>', 'read the request body from a file')
    .option('-X, --method <method>', 'HTTP method (default POST with a body, else GET)')
    .option('--path <path>', 'path after /fn/<function>', '/')
    .option('-H, --header <header...>', 'extra request headers, "Name: value"')
    .option(
      '-i, --include',
      'print the status line and headers (the invocation id, start and EIDs) to stderr',
    )
    .option('--json', 'print {status, headers, body, invocation} as JSON')
    .option(
      '--seal <stage>',
      "seal the body to this stage's enclave key (verified first) and open the sealed response (docs/security.md)",
    )
    .option('--trust-anchor <file...>', 'with --seal: trusted device roots (JSON from `ebcc trust export`)')
    .option('--allow-sim', 'with --seal: accept a software root (the sim backend)')
    .option('--no-public', 'with --seal: show no field in clear, even those the manifest allows')
    .action(
      async (
        fn: string,
        opts: {
          data?: string;
          dataFile?: string;
          method?: string;
          path: string;
          header?: string[];
          include?: boolean;
          json?: boolean;
          seal?: string;
          trustAnchor?: string[];
          allowSim?: boolean;
          public: boolean;
        },
      ) => {
        if (opts.data !== undefined && opts.dataFile)
          throw new CliError('give --data or --data-file, not both', EXIT.usage);
        const body = opts.dataFile ? await readFile(opts.dataFile) : opts.data;
        if (opts.seal) return invokeSealed(program, fn, opts.seal, body, opts);
        const headers: Record<string, string> = {};
        for (const h of opts.header ?? []) {
          const at = h.indexOf(':');
          if (at < 1) throw new CliError(`invalid --header "${h}": use "Name: value"`, EXIT.usage);
          headers[h.slice(0, at).trim()] = h.slice(at + 1).trim();
        }
        if (body !== undefined && !Object.keys(headers).some((k) => k.toLowerCase() === 'content-type'))
          headers['content-type'] = 'application/json';
        const client = gatewayOptions(program);
        const method = (opts.method ?? (body !== undefined ? 'POST' : 'GET')).toUpperCase();
        const sub = opts.path.startsWith('/') ? opts.path : `/${opts.path}`;
        let response: Response;
        try {
          response = await fetch(new URL(`/fn/${encodeURIComponent(fn)}${sub}`, client.url), {
            method,
            headers: { ...headers, ...(client.token ? { authorization: `Bearer ${client.token}` } : {}) },
            body: body === undefined ? undefined : new Uint8Array(Buffer.from(body)),
          });
        } catch (error) {
          throw new CliError(
            `cannot reach the gateway at ${client.url}: ${(error as Error).message}`,
            EXIT.unreachable,
          );
        }
        const text = await response.text();
        const trace = {
          invocation: response.headers.get('x-ebcc-invocation'),
          cid: response.headers.get('x-ebcc-cid'),
          start: response.headers.get('x-ebcc-start'),
          eids: response.headers.get('x-ebcc-eids'),
        };
        if (opts.json) {
          print({
            status: response.status,
            ...trace,
            headers: Object.fromEntries(response.headers),
            body: text,
          });
        } else {
          if (opts.include) {
            process.stderr.write(`HTTP ${response.status} ${response.statusText}\n`);
            for (const [k, v] of response.headers) process.stderr.write(`${k}: ${v}\n`);
            process.stderr.write('\n');
          }
          process.stdout.write(text.endsWith('\n') || !text ? text : `${text}\n`);
        }
        if (!response.ok)
          process.exitCode =
            response.status === 401 || response.status === 403
              ? EXIT.auth
              : response.status === 404
                ? EXIT.notFound
                : EXIT.failed;
      },
    );
  program
    .command('invocation <id>')
    .description('an invocation with every stage execution and its artifacts (JSON)')
    .action(async (id: string) =>
      print(
        (await callGateway(gatewayOptions(program), 'GET', `/v1/invocations/${encodeURIComponent(id)}`)).body,
      ),
    );
}

/** `ebcc invoke --seal`: the client library end to end, printing the opened response. */
async function invokeSealed(
  program: Command,
  fn: string,
  stage: string,
  body: string | Buffer | undefined,
  opts: {
    path: string;
    header?: string[];
    json?: boolean;
    trustAnchor?: string[];
    allowSim?: boolean;
    public: boolean;
  },
): Promise<void> {
  if (body === undefined) throw new CliError('--seal needs a body: --data or --data-file', EXIT.usage);
  const { loadTrustAnchors } = await import('./evidence.ts');
  const { SealedClient, SealedClientError } = await import('../../client/index.ts');
  const gateway = gatewayOptions(program);
  const client = new SealedClient({
    url: gateway.url,
    token: gateway.token,
    trustAnchors: await loadTrustAnchors(opts.trustAnchor),
    allowSim: Boolean(opts.allowSim),
  });
  const bytes = Buffer.from(body);
  let input: Uint8Array | Record<string, unknown> = bytes;
  try {
    const parsed: unknown = JSON.parse(bytes.toString('utf8'));
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed))
      input = parsed as Record<string, unknown>;
  } catch {
    // not JSON: sealed as bytes, with no public fields
  }
  const headers: Record<string, string> = {};
  for (const h of opts.header ?? []) {
    const at = h.indexOf(':');
    if (at < 1) throw new CliError(`invalid --header "${h}": use "Name: value"`, EXIT.usage);
    headers[h.slice(0, at).trim()] = h.slice(at + 1).trim();
  }
  let result;
  try {
    result = await client.invoke(fn, stage, input, { path: opts.path, headers, showPublic: opts.public });
  } catch (error) {
    if (error instanceof SealedClientError)
      throw new CliError(
        error.message,
        error.status === 404
          ? EXIT.notFound
          : error.status === 401 || error.status === 403
            ? EXIT.auth
            : EXIT.failed,
      );
    const cause = (error as { cause?: { code?: string } }).cause;
    if (cause?.code === 'ECONNREFUSED')
      throw new CliError(`cannot reach the gateway at ${gateway.url}`, EXIT.unreachable);
    throw error;
  }
  const text = result.body.toString('utf8');
  if (opts.json)
    print({
      status: result.status,
      sealed: result.sealed,
      invocation: result.invocationId,
      enclave: { cid: result.key.cid, eid: result.key.enclave.eid, kid: result.key.kid },
      body: text,
    });
  else process.stdout.write(text.endsWith('\n') || !text ? text : `${text}\n`);
  if (result.status >= 400) process.exitCode = EXIT.failed;
}
