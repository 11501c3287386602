import type { Db } from '../../db/client.ts';

type Tx = Parameters<Parameters<Db['transaction']>[0]>[0];
export type Write = (tx: Tx) => Promise<unknown>;

/**
 * Group commit: writes queued while a transaction is in flight are committed together in the next one,
 * so durability costs one fsync per batch, not one per artifact. Each caller's promise resolves only
 * once its write is durable, or rejects with the batch's error.
 */
export class GroupCommitter {
  private queue: { write: Write; resolve: () => void; reject: (error: Error) => void }[] = [];
  private flushing: Promise<void> | undefined;
  private closed = false;
  batches = 0;
  writes = 0;

  constructor(
    private readonly db: Db,
    private readonly maxBatch = 512,
  ) {}

  submit(write: Write): Promise<void> {
    if (this.closed) return Promise.reject(new Error('the artifact writer is closed'));
    return new Promise((resolve, reject) => {
      this.queue.push({ write, resolve, reject });
      this.flushing ??= this.drain();
    });
  }

  private async drain(): Promise<void> {
    // Let every write submitted in this turn of the event loop join the first batch.
    await new Promise((r) => setImmediate(r));
    try {
      while (this.queue.length) {
        const batch = this.queue.splice(0, this.maxBatch);
        try {
          await this.db.transaction(async (tx) => {
            for (const item of batch) await item.write(tx);
          });
          this.batches++;
          this.writes += batch.length;
          for (const item of batch) item.resolve();
        } catch (error) {
          // One bad write must not fail its neighbours: retry them one by one.
          if (batch.length === 1) {
            batch[0]!.reject(error as Error);
            continue;
          }
          for (const item of batch) {
            try {
              await this.db.transaction(async (tx) => {
                await item.write(tx);
              });
              item.resolve();
            } catch (single) {
              item.reject(single as Error);
            }
          }
        }
      }
    } finally {
      this.flushing = undefined;
    }
  }

  /** Waits until everything submitted so far is durable. */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.flush();
  }
}

/**
 * The writes of one invocation, committed together with its record: one transaction (one fsync) per
 * invocation instead of one per stage execution plus one for the record. Writes added after the batch
 * was committed (work the anchor left running) go to the committer on their own.
 */
export class InvocationBatch {
  private writes: Write[] = [];
  private committed = false;
  private settle!: { resolve: () => void; reject: (error: Error) => void };
  private readonly done = new Promise<void>((resolve, reject) => (this.settle = { resolve, reject }));

  constructor(private readonly committer: GroupCommitter) {
    this.done.catch(() => undefined);
  }

  add(write: Write): Promise<void> {
    if (this.committed) return this.committer.submit(write);
    this.writes.push(write);
    return this.done;
  }

  commit(last: Write): Promise<void> {
    this.committed = true;
    const writes = [...this.writes, last];
    this.writes = [];
    const committing = this.committer.submit(async (tx) => {
      for (const write of writes) await write(tx);
    });
    committing.then(this.settle.resolve, this.settle.reject);
    return committing;
  }
}
