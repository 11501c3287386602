import { sql } from 'drizzle-orm';
import type { Db } from '../../db/client.ts';
import { eidBlocks } from '../../db/schema.ts';

/**
 * Hands out enclave ids, unique across the installation and never reused. Each allocator reserves a
 * block in libSQL (one small write transaction) and then counts up inside it without touching the
 * database; a crash abandons the rest of the block, it never hands it out again.
 */
export class EidAllocator {
  private next = 0;
  private end = 0;
  private pending: Promise<void> | undefined;

  constructor(
    private readonly db: Db,
    private readonly owner: string,
    private readonly blockSize = 1024,
  ) {}

  async allocate(): Promise<number> {
    while (this.next >= this.end) {
      this.pending ??= this.reserveBlock().finally(() => (this.pending = undefined));
      await this.pending;
    }
    return this.next++;
  }

  private async reserveBlock(): Promise<void> {
    // `max(end)` and the insert run in one write transaction, and `start` is the primary key, so two
    // allocators (even in two processes) can never reserve overlapping blocks.
    const block = await this.db.transaction(
      async (tx) => {
        const row = await tx
          .select({ top: sql<number | null>`max(${eidBlocks.end})` })
          .from(eidBlocks)
          .get();
        const start = Math.max(1, row?.top ?? 1);
        const end = start + this.blockSize;
        await tx.insert(eidBlocks).values({ start, end, owner: this.owner });
        return { start, end };
      },
      { behavior: 'immediate' },
    );
    this.next = block.start;
    this.end = block.end;
  }
}
