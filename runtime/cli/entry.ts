import { runCli } from './main.ts';

// The process entry: `node --import tsx runtime/cli/entry.ts …` runs the CLI in this very process,
// which is what supervisors and crash tests need to signal.
process.exitCode = await runCli(process.argv.slice(2));
