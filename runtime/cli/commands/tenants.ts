import type { Command } from 'commander';
import { callGateway } from '../client.ts';
import { CliError, EXIT } from '../errors.ts';
import { printJsonOrTable } from '../output.ts';
import { gatewayOptions } from './functions.ts';

const TENANT = /^[a-z0-9_-]{1,64}$/;

const tenantPath = (tenant: string) => {
  if (!TENANT.test(tenant)) throw new CliError(`invalid tenant "${tenant}": give its name or id`, EXIT.usage);
  return `/v1/tenants/${encodeURIComponent(tenant)}/data-key`;
};

/** A tenant's data keys, through the gateway with an admin token of that tenant. */
export function registerTenantCommands(program: Command): void {
  const tenant = program.command('tenant').description("a tenant's data keys (artifacts sealed at rest)");
  tenant
    .command('keys <tenant>')
    .description('list the data keys of a tenant (ids and dates, never key bytes)')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { json?: boolean }) => {
      const { body } = await callGateway(gatewayOptions(program), 'GET', tenantPath(name));
      const keys = (body as { keys: Record<string, unknown>[] }).keys;
      printJsonOrTable(opts.json, keys, ['id', 'kekId', 'createdAt', 'shreddedAt']);
    });
  tenant
    .command('shred <tenant>')
    .description(
      "crypto-shred a tenant's data keys: every artifact they sealed becomes unreadable, for good (evidence still verifies over digests)",
    )
    .option('--yes', 'confirm: this cannot be undone')
    .action(async (name: string, opts: { yes?: boolean }) => {
      const path = tenantPath(name);
      if (!opts.yes)
        throw new CliError(
          `shredding makes every sealed artifact of tenant ${name} unreadable for good; run again with --yes`,
          EXIT.usage,
        );
      const { body } = await callGateway(gatewayOptions(program), 'DELETE', path);
      const { shredded } = body as { shredded: string[] };
      process.stdout.write(
        `shredded ${shredded.length} data key(s) of tenant ${name}: ${shredded.join(', ')}\n`,
      );
    });
}
