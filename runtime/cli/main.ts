import { Command, CommanderError, Option } from 'commander';
import { configFrom, registerAdminCommands } from './commands/admin.ts';
import { registerBatchCommands } from './commands/batch.ts';
import { registerEvidenceCommands } from './commands/evidence.ts';
import { registerFunctionCommands } from './commands/functions.ts';
import { registerInstanceCommands } from './commands/instances.ts';
import { registerWorkerCommand } from './commands/worker.ts';
import { registerTenantCommands } from './commands/tenants.ts';
import { CliError, EXIT } from './errors.ts';

export function buildProgram(): Command {
  const program = new Command('ebcc')
    .description('EBCC: Enclave-Backed Confidential Containers, a confidential edge FaaS runtime')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride();
  program.addOption(
    new Option('--url <url>', 'gateway URL').env('EBCC_URL').default('http://127.0.0.1:8787'),
  );
  program.addOption(new Option('--token <token>', 'API token').env('EBCC_TOKEN'));
  program.addOption(new Option('--home <dir>', 'data directory (database, caches)').env('EBCC_HOME'));
  registerAdminCommands(program);
  registerFunctionCommands(program);
  registerInstanceCommands(program);
  registerTenantCommands(program);
  registerBatchCommands(program);
  registerEvidenceCommands(program, () => configFrom(program));
  registerWorkerCommand(program);
  program.commands.forEach(function exitOverrideAll(cmd: Command) {
    cmd.exitOverride();
    cmd.commands.forEach(exitOverrideAll);
  });
  return program;
}

export async function runCli(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return Number(process.exitCode ?? EXIT.ok);
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help and --version end here with code 0; real usage errors were already printed.
      return error.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    if (error instanceof CliError) {
      process.stderr.write(`ebcc: ${error.message}\n`);
      return error.exitCode;
    }
    process.stderr.write(`ebcc: ${(error as Error).stack ?? String(error)}\n`);
    return EXIT.failed;
  }
}
