import { randomBytes } from 'node:crypto';
import { and, desc, eq, isNull, sql } from 'drizzle-orm';
import type { Database, Db } from '../../db/client.ts';
import { dataKeys } from '../../db/schema.ts';
import { newId } from '../ids.ts';
import { KekError, type KeyEncryptionKeyProvider } from './kek.ts';

export interface DataKey {
  id: string;
  key: Buffer;
}

/** The data key that sealed an artifact was shredded: what it sealed can never be read again. */
export class DataKeyShreddedError extends Error {
  constructor(
    readonly keyId: string,
    readonly shreddedAt: number,
  ) {
    super(
      `data key ${keyId} was shredded at ${new Date(shreddedAt).toISOString()}; its artifacts are unreadable`,
    );
    this.name = 'DataKeyShreddedError';
  }
}

/** The associated data of a wrapped DEK: a wrapped key cannot be moved to another tenant or id. */
const wrapContext = (tenantId: string, keyId: string) => `ebcc-dek/1\0${tenantId}\0${keyId}`;

/**
 * Per-tenant data keys (AES-256), wrapped by the operator's KEK. Writers use the tenant's newest
 * unshredded key, cached for `activeTtlMs` (a key shredded on another gateway is dropped from this
 * one's cache within that time; whatever it seals meanwhile is as unreadable as the rest). Readers
 * look the key's row up every time, so a shredded key is refused at once everywhere.
 */
export class DataKeyring {
  private readonly active = new Map<string, { key: DataKey; until: number }>();
  private readonly creating = new Map<string, Promise<DataKey>>();
  private readonly opened = new Map<string, Buffer>();

  private readonly db: Db;

  constructor(
    private readonly database: Database,
    readonly kek: KeyEncryptionKeyProvider,
    private readonly activeTtlMs = 60_000,
  ) {
    this.db = database.db;
  }

  /** The tenant's current data key, made (and wrapped) on first use. */
  async activeKey(tenantId: string): Promise<DataKey> {
    const cached = this.active.get(tenantId);
    if (cached && cached.until > Date.now()) return cached.key;
    let pending = this.creating.get(tenantId);
    if (!pending) {
      pending = this.loadOrCreate(tenantId).finally(() => this.creating.delete(tenantId));
      this.creating.set(tenantId, pending);
    }
    const key = await pending;
    this.active.set(tenantId, { key, until: Date.now() + this.activeTtlMs });
    return key;
  }

  private async loadOrCreate(tenantId: string): Promise<DataKey> {
    const row = await this.db
      .select()
      .from(dataKeys)
      .where(and(eq(dataKeys.tenantId, tenantId), isNull(dataKeys.shreddedAt)))
      .orderBy(desc(dataKeys.createdAt), desc(dataKeys.id))
      .get();
    if (row?.wrapped) return { id: row.id, key: await this.unwrap(row.id, tenantId, row.wrapped, row.kekId) };
    const id = newId('dk');
    const key = randomBytes(32);
    await this.db.insert(dataKeys).values({
      id,
      tenantId,
      kekId: this.kek.id,
      wrapped: await this.kek.wrap(key, wrapContext(tenantId, id)),
    });
    this.opened.set(id, key);
    return { id, key };
  }

  private async unwrap(id: string, tenantId: string, wrapped: Buffer, kekId: string): Promise<Buffer> {
    const known = this.opened.get(id);
    if (known) return known;
    if (kekId !== this.kek.id)
      throw new KekError(
        `data key ${id} was wrapped by KEK ${kekId}, but this node has ${this.kek.id}: every node sharing a database must share the KEK (EBCC_KEK_FILE) or its KMS`,
      );
    const key = await this.kek.unwrap(wrapped, wrapContext(tenantId, id));
    this.opened.set(id, key);
    return key;
  }

  /**
   * Opens a data key by id for a reader of `tenantId`. Throws `DataKeyShreddedError` when it was
   * shredded, and an Error when it does not exist or belongs to another tenant.
   */
  async open(keyId: string, tenantId: string): Promise<Buffer> {
    const row = await this.db.select().from(dataKeys).where(eq(dataKeys.id, keyId)).get();
    if (!row || row.tenantId !== tenantId)
      throw new Error(`data key ${keyId} does not belong to this tenant`);
    if (row.shreddedAt !== null || !row.wrapped) {
      this.opened.delete(keyId);
      throw new DataKeyShreddedError(keyId, row.shreddedAt ?? 0);
    }
    return this.unwrap(row.id, tenantId, row.wrapped, row.kekId);
  }

  /** The tenant's data keys, newest first (never their bytes). */
  async list(tenantId: string) {
    return this.db
      .select({
        id: dataKeys.id,
        kekId: dataKeys.kekId,
        createdAt: dataKeys.createdAt,
        shreddedAt: dataKeys.shreddedAt,
      })
      .from(dataKeys)
      .where(eq(dataKeys.tenantId, tenantId))
      .orderBy(desc(dataKeys.createdAt), desc(dataKeys.id));
  }

  /**
   * Crypto-shreds every unshredded data key of the tenant: the wrapped key is overwritten and dropped
   * from this process. The next sealed write makes a fresh key. Returns the ids shredded (none: nothing to do).
   * With `secure_delete` the old bytes are overwritten with zeros in the database file, and a WAL
   * checkpoint then moves the page into it, so no copy of the wrapped key is left in a local file.
   */
  async shred(tenantId: string, now = Date.now()): Promise<string[]> {
    const [, shredded] = await this.db.batch([
      this.db.run(sql`PRAGMA secure_delete = ON`),
      this.db
        .update(dataKeys)
        .set({ wrapped: null, shreddedAt: now })
        .where(and(eq(dataKeys.tenantId, tenantId), isNull(dataKeys.shreddedAt)))
        .returning({ id: dataKeys.id }),
    ]);
    if (this.database.url.startsWith('file:'))
      await this.database.client.execute('PRAGMA wal_checkpoint(TRUNCATE)').catch(() => undefined);
    this.active.delete(tenantId);
    for (const { id } of shredded) this.opened.delete(id);
    return shredded.map((r) => r.id);
  }
}
