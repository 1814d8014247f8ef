/**
 * Locks on ranges of guest clusters, so requests on different clusters run
 * in parallel while requests on the same clusters take turns: requests that
 * change metadata exclusively (allocation and copy-on-write must not
 * interleave), reads and writes in place shared. A request waits only for
 * conflicting requests that arrived before it, so waits never form a cycle
 * and nobody is overtaken forever.
 */
import { deferred, type Deferred } from '../../core/util/deferred.js';

interface Holder {
  first: number;
  end: number;
  exclusive: boolean;
  /** Made when a later request has to wait for this one (most never are waited for). */
  released: Deferred | undefined;
}

function conflicts(a: Holder, first: number, end: number, exclusive: boolean): boolean {
  return (exclusive || a.exclusive) && a.first < end && first < a.end;
}

export class RangeLock {
  /** Holders and waiters, in arrival order. */
  private readonly queue: Holder[] = [];

  /** Waits for `[first, end)` (cluster indexes) and returns the function that releases it. */
  async acquire(first: number, end: number, exclusive: boolean): Promise<() => void> {
    const earlier: Promise<void>[] = [];
    for (const other of this.queue) {
      if (conflicts(other, first, end, exclusive)) earlier.push((other.released ??= deferred()).promise);
    }
    const release = this.enter(first, end, exclusive);
    for (const wait of earlier) await wait;
    return release;
  }

  /** `acquire` when nothing conflicting holds or waits for the range: the release function at once; else undefined. */
  tryAcquire(first: number, end: number, exclusive: boolean): (() => void) | undefined {
    for (const other of this.queue) if (conflicts(other, first, end, exclusive)) return undefined;
    return this.enter(first, end, exclusive);
  }

  private enter(first: number, end: number, exclusive: boolean): () => void {
    const holder: Holder = { first, end, exclusive, released: undefined };
    this.queue.push(holder);
    return () => {
      const index = this.queue.indexOf(holder);
      if (index >= 0) this.queue.splice(index, 1);
      holder.released?.resolve();
    };
  }
}
