import type { Config } from '../config.ts';
import { FileKekProvider, type KeyEncryptionKeyProvider } from './kek.ts';

/**
 * The KEK provider this installation uses. Today: the file provider (the default file is made on first
 * start; a configured `EBCC_KEK_FILE` must already exist). An external KMS plugs in here.
 */
export function openKekProvider(config: Pick<Config, 'kek'>): KeyEncryptionKeyProvider {
  return FileKekProvider.open(config.kek.file, { create: config.kek.create });
}
