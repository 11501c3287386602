import type { Command } from 'commander';
import type { Database } from '../../../db/client.ts';
import { ConfigError, loadConfig, type Config } from '../../config.ts';
import { CliError, EXIT } from '../errors.ts';
import { printJsonOrTable } from '../output.ts';

export function configFrom(program: Command, overrides: Partial<Config> = {}): Config {
  const { home } = program.opts<{ home?: string }>();
  try {
    return loadConfig(process.env, { ...(home ? { home } : {}), ...overrides });
  } catch (error) {
    if (error instanceof ConfigError) throw new CliError(error.message, EXIT.usage);
    throw error;
  }
}

// Commands import what they need when they run, so that `ebcc --help` and friends start fast.
const tokens = () => import('../../auth/tokens.ts');

async function withDatabase<T>(config: Config, work: (database: Database) => Promise<T>): Promise<T> {
  const { migrateDatabase, openDatabase } = await import('../../../db/client.ts');
  let database: Database;
  try {
    database = await openDatabase(config.dbUrl, config.dbAuthToken);
    await migrateDatabase(database);
  } catch (error) {
    throw new CliError(
      `cannot open the database ${config.dbUrl}: ${(error as Error).message}`,
      EXIT.unreachable,
    );
  }
  try {
    return await work(database);
  } finally {
    database.close();
  }
}

/** Operator commands: they work on the local database directly, not through the gateway. */
export function registerAdminCommands(program: Command): void {
  program
    .command('serve')
    .description('run the gateway (and, in the single-node default, everything it needs)')
    .option('--host <host>', 'address to listen on (default 127.0.0.1, or EBCC_HOST)')
    .option('--port <port>', 'port to listen on (default 8787, or EBCC_PORT; 0 picks a free one)')
    .option('--tls-cert <file>', 'serve HTTPS with this certificate (PEM)')
    .option('--tls-key <file>', 'private key for --tls-cert (PEM)')
    .action(async (opts: { host?: string; port?: string; tlsCert?: string; tlsKey?: string }) => {
      const env = {
        ...process.env,
        ...(opts.host ? { EBCC_HOST: opts.host } : {}),
        ...(opts.port ? { EBCC_PORT: opts.port } : {}),
        ...(opts.tlsCert ? { EBCC_TLS_CERT: opts.tlsCert } : {}),
        ...(opts.tlsKey ? { EBCC_TLS_KEY: opts.tlsKey } : {}),
      };
      const { home } = program.opts<{ home?: string }>();
      let config: Config;
      try {
        config = loadConfig(env, home ? { home } : {});
      } catch (error) {
        throw new CliError((error as Error).message, EXIT.usage);
      }
      const { runUnderSupervisor } = await import('../../supervisor.ts');
      const supervised = await runUnderSupervisor();
      if (supervised !== null) {
        process.exitCode = supervised;
        return;
      }
      const { startGateway } = await import('../../gateway/server.ts');
      const gateway = await startGateway(config).catch((error: Error) => {
        throw new CliError(`cannot start the gateway: ${error.message}`, EXIT.unreachable);
      });
      process.stdout.write(`ebcc gateway listening on ${gateway.url} (pid ${process.pid})\n`);
      const stop = (signal: string) => {
        process.stdout.write(`ebcc gateway stopping (${signal})\n`);
        gateway.close().then(
          () => process.exit(0),
          () => process.exit(1),
        );
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });

  program
    .command('migrate')
    .description('create or upgrade the database schema')
    .action(async () => {
      const config = configFrom(program);
      await withDatabase(config, async () => undefined);
      process.stdout.write(`database ${config.dbUrl} is up to date\n`);
    });

  const token = program
    .command('token')
    .description('manage API tokens (operator side, on the local database)');
  token
    .command('create')
    .description(
      'issue a token; creates the tenant if it does not exist (this bootstraps the first admin token)',
    )
    .requiredOption('--tenant <name>', 'tenant the token belongs to')
    .option('--scopes <list>', 'comma-separated scopes: deploy, invoke, admin', 'admin')
    .option('--name <name>', 'a label for the token', 'cli')
    .option('--expires <when>', 'expiry: 30d, 12h, 15m or an ISO date')
    .option('--json', 'print JSON')
    .action(
      async (opts: { tenant: string; scopes: string; name: string; expires?: string; json?: boolean }) => {
        const { ensureTenant, issueToken, parseExpiry, scopeList } = await tokens();
        const scopes = scopeList.safeParse(
          opts.scopes
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean),
        );
        if (!scopes.success)
          throw new CliError(
            `invalid --scopes "${opts.scopes}": use deploy, invoke and/or admin`,
            EXIT.usage,
          );
        if (!/^[a-z][a-z0-9-]{0,62}$/.test(opts.tenant))
          throw new CliError(`invalid --tenant "${opts.tenant}": use a-z, 0-9 and "-"`, EXIT.usage);
        let expiresAt: number | null = null;
        try {
          expiresAt = opts.expires ? parseExpiry(opts.expires) : null;
        } catch (error) {
          throw new CliError((error as Error).message, EXIT.usage);
        }
        const issued = await withDatabase(configFrom(program), async ({ db }) => {
          const tenant = await ensureTenant(db, opts.tenant);
          return issueToken(db, { tenantId: tenant.id, name: opts.name, scopes: scopes.data, expiresAt });
        });
        if (opts.json) process.stdout.write(`${JSON.stringify(issued, null, 2)}\n`);
        else process.stdout.write(`${issued.token}\n`);
      },
    );
  token
    .command('list')
    .description('list tokens (never their secrets)')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const { listTokens } = await tokens();
      const rows = await withDatabase(configFrom(program), ({ db }) => listTokens(db));
      printJsonOrTable(opts.json, rows, ['id', 'tenant', 'name', 'scopes', 'expiresAt', 'revokedAt']);
    });
  token
    .command('revoke <id>')
    .description('revoke a token at once')
    .action(async (id: string) => {
      const { revokeToken } = await tokens();
      const ok = await withDatabase(configFrom(program), ({ db }) => revokeToken(db, id));
      if (!ok) throw new CliError(`no token ${id}`, EXIT.notFound);
      process.stdout.write(`revoked ${id}\n`);
    });
}
