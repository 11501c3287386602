import { eq } from 'drizzle-orm';
import { newId } from '../../runtime/ids.ts';
import type { Db } from '../client.ts';
import { installationMeta } from '../schema.ts';

const INSTALLATION_ID = 'installation-id';

/**
 * This database's installation id, made by whichever process asks first: every process that opens the
 * database reads the same one, whatever order they start in.
 */
export async function installationId(db: Db): Promise<string> {
  await db
    .insert(installationMeta)
    .values({ key: INSTALLATION_ID, value: newId('inst') })
    .onConflictDoNothing();
  const [row] = await db.select().from(installationMeta).where(eq(installationMeta.key, INSTALLATION_ID));
  if (!row) throw new Error('the installation id could not be recorded');
  return row.value;
}
