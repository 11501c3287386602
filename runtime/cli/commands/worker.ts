import type { Command } from 'commander';
import { z } from 'zod';
import { CliError, EXIT } from '../errors.ts';
import { configFrom } from './admin.ts';

const options = z.strictObject({
  roles: z
    .string()
    .regex(/^[a-z][a-z0-9-]*(,[a-z][a-z0-9-]*)*$/, 'a comma-separated list of role names')
    .optional(),
  grace: z.coerce.number().int().min(0).max(600_000).default(10_000),
});

/** `ebcc worker`: the BullMQ workers (pool upkeep, and whatever else runtime/queues/roles.ts lists). */
export function registerWorkerCommand(program: Command): void {
  program
    .command('worker')
    .description('run the BullMQ workers (pool upkeep and queue work) apart from the gateway')
    .option('--roles <list>', 'only these roles (comma-separated; default: all)')
    .option('--grace <ms>', 'on SIGTERM, how long in-flight work may take before it is handed back', '10000')
    .action(async (raw: { roles?: string; grace?: string }) => {
      const parsed = options.safeParse(raw);
      if (!parsed.success)
        throw new CliError(
          `invalid options: ${parsed.error.issues.map((i) => `--${i.path.join('.')}: ${i.message}`).join('; ')}`,
          EXIT.usage,
        );
      const config = configFrom(program);
      const { selectRoles, startWorkers } = await import('../../queues/host.ts');
      let roles;
      try {
        roles = selectRoles(parsed.data.roles?.split(','));
      } catch (error) {
        throw new CliError((error as Error).message, EXIT.usage);
      }
      const { runUnderSupervisor } = await import('../../supervisor.ts');
      const supervised = await runUnderSupervisor();
      if (supervised !== null) {
        process.exitCode = supervised;
        return;
      }
      const { createLogger } = await import('../../log.ts');
      const workers = await startWorkers(config, createLogger(config.logLevel), roles).catch(
        (error: Error) => {
          throw new CliError(`cannot start the worker: ${error.message}`, EXIT.unreachable);
        },
      );
      process.stdout.write(
        `ebcc worker running as ${workers.nodeId} (pid ${process.pid}): roles ${workers.roles.join(', ')}\n`,
      );
      await new Promise<void>((resolve) => {
        const stop = (signal: string) => {
          process.stdout.write(`ebcc worker stopping (${signal})\n`);
          workers.close(Date.now() + parsed.data.grace).then(
            () => {
              process.stdout.write('ebcc worker stopped\n');
              resolve();
            },
            (error: Error) => {
              process.stderr.write(`ebcc: worker shutdown failed: ${error.message}\n`);
              process.exitCode = EXIT.failed;
              resolve();
            },
          );
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
      // A stray handle of a closed client must not keep a stopped worker alive.
      setTimeout(() => process.exit(), 1_000).unref();
    });
}
