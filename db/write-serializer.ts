import type { Client, InStatement, Transaction, TransactionMode } from '@libsql/client';

/** A first-come, first-served async lock. */
class AsyncLock {
  private tail: Promise<void> = Promise.resolve();

  async acquire(): Promise<() => void> {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const previous = this.tail;
    this.tail = previous.then(() => held);
    await previous;
    let released = false;
    return () => {
      if (!released) {
        released = true;
        release();
      }
    };
  }
}

const READ_ONLY = /^\s*(select|explain)\b/i;
const sqlOf = (stmt: InStatement) => (typeof stmt === 'string' ? stmt : stmt.sql);

/**
 * Serializes this process's writers on a local libSQL file. The embedded driver takes SQLite's write
 * lock synchronously: a second connection of the same process waiting for it would block the very
 * event loop that must release it, a deadlock until the busy timeout. So every write (a transaction,
 * a batch, a migration, or a statement that is not a plain read) first takes this process-wide lock,
 * asynchronously; reads go straight to the pool and run alongside (WAL). Writers in other processes
 * still meet at SQLite's lock, and wait for it up to the busy timeout.
 */
export function serializeWrites(client: Client): Client {
  const lock = new AsyncLock();
  const locked =
    <A extends unknown[], R>(fn: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      const release = await lock.acquire();
      try {
        return await fn(...args);
      } finally {
        release();
      }
    };
  const transaction = async (mode?: TransactionMode): Promise<Transaction> => {
    const release = await lock.acquire();
    let tx: Transaction;
    try {
      tx = await client.transaction(mode);
    } catch (error) {
      release();
      throw error;
    }
    const finish =
      <R>(fn: () => R): (() => R) =>
      () => {
        try {
          return fn();
        } finally {
          release();
        }
      };
    const commit = tx.commit.bind(tx);
    const rollback = tx.rollback.bind(tx);
    const close = tx.close.bind(tx);
    return Object.assign(tx, {
      commit: async () => {
        try {
          await commit();
        } finally {
          release();
        }
      },
      rollback: async () => {
        try {
          await rollback();
        } finally {
          release();
        }
      },
      close: finish(close),
    });
  };
  return new Proxy(client, {
    get(target, property, receiver) {
      switch (property) {
        case 'transaction':
          return transaction;
        case 'execute':
          return (stmt: InStatement, ...rest: unknown[]) =>
            READ_ONLY.test(sqlOf(stmt))
              ? (target.execute as (...a: unknown[]) => Promise<unknown>)(stmt, ...rest)
              : locked(target.execute.bind(target) as (...a: unknown[]) => Promise<unknown>)(stmt, ...rest);
        case 'batch':
        case 'migrate':
        case 'executeMultiple': {
          const fn = Reflect.get(target, property, receiver) as (...a: unknown[]) => Promise<unknown>;
          return locked(fn.bind(target));
        }
        default: {
          const value = Reflect.get(target, property, receiver);
          return typeof value === 'function' ? value.bind(target) : value;
        }
      }
    },
  });
}
