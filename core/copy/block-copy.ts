/**
 * The copy engine backup, mirror and stream share (QEMU's block-copy.c):
 * copies clusters marked in a bitmap from a source to a target. Each
 * cluster is copied once: a copy claims its clusters (clearing their bits)
 * and registers them as in flight; copy-before-write waits for a cluster
 * another copy is moving and copies the rest itself, cluster by cluster.
 * Ranges that read as zeroes become write-zeroes on the target, or nothing
 * where the target already reads as zeroes; with `skipUnallocated` (sync
 * top) ranges the source's top layer does not allocate are left out.
 *
 * Mirror marks clusters again while they are being copied (the guest wrote
 * there): a claim never takes a cluster another copy is moving, and a
 * write-blocking guest write `hold`s its clusters while it writes both
 * sides, so the target sees the writes to a cluster in the source's order.
 */
import { copyBetween } from '../block/copy-range.js';
import type { NodeChild } from '../block/node-edge.js';
import type { ClusterBitmap } from '../bitmap/cluster-bitmap.js';
import { type BlockIoError, toBlockIoError } from '../errors.js';
import { deferred } from '../util/deferred.js';

/** A copy failed reading the source or writing the target; its clusters are marked again. */
export class CopyError extends Error {
  constructor(
    readonly operation: 'read' | 'write',
    readonly ioError: BlockIoError,
  ) {
    super(ioError.message);
    this.name = 'CopyError';
  }
}

export interface BlockCopyOptions {
  source: NodeChild;
  target: NodeChild;
  /** Clusters still to copy. */
  bitmap: ClusterBitmap;
  /** Largest background copy, in bytes (a multiple of the cluster size). */
  maxChunk: number;
  /** Leave out ranges not allocated in the source's top layer (sync=top). */
  skipUnallocated?: boolean;
  /** Write data compressed (the target must support it). */
  compress?: boolean;
  /**
   * Copy data by copy offloading (core/block/copy-range.ts; backup's
   * x-perf.use-copy-range), not with compress; the first copy that cannot
   * be offloaded (or fails) turns it off, and data is read and written from
   * then on, as QEMU's block-copy falls back.
   */
  useCopyRange?: boolean;
  /** Zeroes may be written by deallocating (BDRV_REQ_MAY_UNMAP; default true). */
  unmap?: boolean;
  /**
   * The target gets a backing node only after the copy (drive-mirror's
   * target, opened without the backing file it names): where it reads as
   * zeroes now, that file may show through later, so zeroes are written.
   */
  targetBackingLater?: boolean;
  /** Bytes copied, by the background loop or copy-before-write. */
  onProgress?: (bytes: number) => void;
  /** Bytes found unallocated and left out. */
  onSkip?: (bytes: number) => void;
}

/** Clusters `[first, end)` claimed by one copy. */
export interface ClaimedRange {
  first: number;
  end: number;
}

export class BlockCopy {
  private readonly inFlight = new Map<number, Promise<void>>();
  private readonly spareBuffers: Buffer[] = [];
  private offload: boolean;

  constructor(private readonly options: BlockCopyOptions) {
    this.offload = options.useCopyRange === true && options.compress !== true;
  }

  get bitmap(): ClusterBitmap {
    return this.options.bitmap;
  }

  /** Clusters being copied right now. */
  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /** Resolves when no copy is in flight (copy-before-write ones included). */
  async settled(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all(new Set(this.inFlight.values()));
  }

  /** Resolves when one of the copies (or holds) in flight has ended; at once if none is. */
  async oneSettled(): Promise<void> {
    if (this.inFlight.size > 0) await Promise.race(new Set(this.inFlight.values()));
  }

  /**
   * Claims the first run of marked clusters at or after `from` that no copy
   * is moving, at most `maxBytes` (default `maxChunk`) long.
   */
  claimNext(from: number, maxBytes = this.options.maxChunk): ClaimedRange | undefined {
    const { bitmap } = this.options;
    let first = bitmap.nextSet(from);
    while (first >= 0 && this.inFlight.has(first)) first = bitmap.nextSet(first + 1);
    if (first < 0) return undefined;
    const limit = Math.max(1, Math.floor(maxBytes / bitmap.clusterSize));
    let end = first + 1;
    while (end < bitmap.clusters && end - first < limit && bitmap.has(end) && !this.inFlight.has(end)) end++;
    for (let c = first; c < end; c++) bitmap.clear(c);
    return { first, end };
  }

  /** Whether a copy or hold is moving any cluster of `range`. */
  moving(range: ClaimedRange): boolean {
    for (let c = range.first; c < range.end; c++) if (this.inFlight.has(c)) return true;
    return false;
  }

  /** Gives back a claim that will not be copied now. */
  unclaim(range: ClaimedRange): void {
    for (let c = range.first; c < range.end; c++) this.options.bitmap.set(c);
  }

  /** Bytes a claim covers. */
  bytesOf(range: ClaimedRange): number {
    return this.options.bitmap.range(range.first, range.end).bytes;
  }

  /** Copies a claimed range; on failure its clusters are marked again and a CopyError is thrown. */
  copy(range: ClaimedRange): Promise<void> {
    const done = this.copyRange(range).catch((error: unknown) => {
      this.unclaim(range);
      throw error instanceof CopyError ? error : new CopyError('read', toBlockIoError(error));
    });
    const settled = done.then(
      () => undefined,
      () => undefined,
    );
    for (let c = range.first; c < range.end; c++) this.inFlight.set(c, settled);
    return done.finally(() => {
      for (let c = range.first; c < range.end; c++) {
        if (this.inFlight.get(c) === settled) this.inFlight.delete(c);
      }
    });
  }

  /**
   * Waits until no copy moves a cluster of `[offset, offset + bytes)`, then
   * keeps copies off those clusters (claims skip them, copy-before-write and
   * other holds wait) until the returned function is called.
   */
  async hold(offset: number, bytes: number): Promise<() => void> {
    const { bitmap } = this.options;
    const { first, end } = bitmap.clustersOf(offset, bytes);
    const last = Math.min(end, bitmap.clusters);
    for (;;) {
      const moving = new Set<Promise<void>>();
      for (let c = first; c < last; c++) {
        const copy = this.inFlight.get(c);
        if (copy !== undefined) moving.add(copy);
      }
      if (moving.size === 0) break;
      await Promise.all(moving);
    }
    const held = deferred();
    for (let c = first; c < last; c++) this.inFlight.set(c, held.promise);
    return () => {
      for (let c = first; c < last; c++) {
        if (this.inFlight.get(c) === held.promise) this.inFlight.delete(c);
      }
      held.resolve();
    };
  }

  /**
   * Copy-before-write: resolves once every cluster of `[offset, offset +
   * bytes)` has its current data on the target, waiting for clusters other
   * copies are moving and copying the others itself, each cluster on its
   * own. Rejects with the CopyError of a cluster it could not copy.
   */
  async copyBeforeWrite(offset: number, bytes: number): Promise<void> {
    const { bitmap } = this.options;
    const { first, end } = bitmap.clustersOf(offset, bytes);
    for (;;) {
      const waits: Promise<void>[] = [];
      const copies: Promise<void>[] = [];
      for (let c = first; c < end && c < bitmap.clusters; c++) {
        const moving = this.inFlight.get(c);
        if (moving !== undefined) waits.push(moving);
        else if (bitmap.has(c)) {
          bitmap.clear(c);
          copies.push(this.copy({ first: c, end: c + 1 }));
        }
      }
      if (waits.length === 0 && copies.length === 0) return;
      const results = await Promise.allSettled([...copies, ...waits]);
      const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failure !== undefined) throw failure.reason;
    }
  }

  private async copyRange(range: ClaimedRange): Promise<void> {
    const { source, skipUnallocated, onProgress, onSkip } = this.options;
    const { offset, bytes } = this.options.bitmap.range(range.first, range.end);
    const extents = await source.blockStatus(offset, bytes).catch((error: unknown) => {
      throw new CopyError('read', toBlockIoError(error));
    });
    let copied = 0;
    let skipped = 0;
    for (const extent of extents) {
      if (skipUnallocated && !extent.allocated) skipped += extent.length;
      else {
        if (extent.zero) await this.zero(extent.offset, extent.length);
        else await this.copyData(extent.offset, extent.length);
        copied += extent.length;
      }
    }
    if (copied > 0) onProgress?.(copied);
    if (skipped > 0) onSkip?.(skipped);
  }

  private async copyData(offset: number, length: number): Promise<void> {
    const { source, target, compress, maxChunk } = this.options;
    if (this.offload) {
      try {
        return await copyBetween(source, offset, target, offset, length);
      } catch {
        this.offload = false;
      }
    }
    const buffer = this.spareBuffers.pop() ?? Buffer.allocUnsafe(maxChunk);
    try {
      for (let done = 0; done < length; done += maxChunk) {
        const part = buffer.subarray(0, Math.min(maxChunk, length - done));
        await source.read(offset + done, part).catch((error: unknown) => {
          throw new CopyError('read', toBlockIoError(error));
        });
        await target.write(offset + done, part, compress ? { compressed: true } : {}).catch((error: unknown) => {
          throw new CopyError('write', toBlockIoError(error));
        });
      }
    } finally {
      this.spareBuffers.push(buffer);
    }
  }

  private async zero(offset: number, length: number): Promise<void> {
    const { target } = this.options;
    if (await this.targetReadsZero(offset, length)) return;
    await target.writeZeroes(offset, length, { mayUnmap: this.options.unmap ?? true }).catch((error: unknown) => {
      throw new CopyError('write', toBlockIoError(error));
    });
  }

  /** The target already reads as zeroes there (and no backing file could show through instead). */
  private async targetReadsZero(offset: number, length: number): Promise<boolean> {
    const { target } = this.options;
    if (target.node.children.has('backing') || this.options.targetBackingLater === true) return false;
    const extents = await target.blockStatus(offset, length).catch(() => []);
    return extents.length > 0 && extents.every((e) => e.zero);
  }
}
