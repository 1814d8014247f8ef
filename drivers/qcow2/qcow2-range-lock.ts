/**
 * Locks on ranges of guest clusters, so requests on different clusters run
 * in parallel while requests on the same clusters take turns: writes
 * exclusively (allocation and copy-on-write must not interleave), reads
 * shared. A request waits only for conflicting requests that arrived before
 * it, so waits never form a cycle and nobody is overtaken forever.
 */
import { deferred, type Deferred } from '../../core/util/deferred.js';

interface Holder {
  first: number;
  end: number;
  exclusive: boolean;
  released: Deferred;
}

export class RangeLock {
  /** Holders and waiters, in arrival order. */
  private readonly queue: Holder[] = [];

  /** Waits for `[first, end)` (cluster indexes) and returns the function that releases it. */
  async acquire(first: number, end: number, exclusive: boolean): Promise<() => void> {
    const holder: Holder = { first, end, exclusive, released: deferred() };
    const earlier = this.queue.filter(
      (other) => (exclusive || other.exclusive) && other.first < end && first < other.end,
    );
    this.queue.push(holder);
    for (const other of earlier) await other.released.promise;
    return () => {
      const index = this.queue.indexOf(holder);
      if (index >= 0) this.queue.splice(index, 1);
      holder.released.resolve();
    };
  }
}
