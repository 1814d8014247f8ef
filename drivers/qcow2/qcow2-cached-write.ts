/**
 * Writes of new data without the metadata lock and without waiting: the
 * common case of a guest, a conversion or a job writing where nothing of
 * ours is yet (every cluster unallocated, zero, shared or compressed), in
 * one L2 table that is ours, with its entries and the refcount blocks the
 * new clusters need cached and the file long enough. Planning (the new
 * clusters found and counted) and linking (the L2 entries pointed at them)
 * are then each one synchronous step, where the locked way (qcow2-write.ts)
 * takes some twenty awaits that sit on the critical path of sequential
 * writes. The same changes in the same order, so crash safety is the
 * locked way's. Both steps need the lock free (so no change is half done)
 * and change nothing when they cannot run; the caller then takes the
 * locked way, which also reports what is corrupt.
 */
import { INCOMPAT_DIRTY, type L2Entry, readL1Entry, readReftableEntry, writeL2Entry } from './qcow2-format.js';
import { noteFileEnd, type Qcow2Image } from './qcow2-image.js';
import { forEachCachedEntry, updateCachedEntries } from './qcow2-l1-l2.js';
import { cachedOverlap } from './qcow2-overlap.js';
import { adjustInBlock, queueFree, scanRefblock } from './qcow2-refcount.js';
import type { Allocation, Piece } from './qcow2-write.js';

/** A cluster that is ours to write in place: a normal or preallocated zero cluster with COPIED set. */
export function owned(entry: L2Entry): boolean {
  return (entry.kind === 'normal' || entry.kind === 'zero-alloc') && entry.copied;
}

/** The L2 update that points an allocation's guest clusters at its new host clusters. */
export function pointAt(image: Qcow2Image, piece: Allocation): (cluster: number, slice: Buffer, at: number) => void {
  const cs = image.g.clusterSize;
  return (cluster, slice, at) => writeL2Entry(slice, at, piece.host + (cluster - piece.first) * cs, true, false);
}

/** Queues the references an allocation's clusters dropped. */
export function freeOld(image: Qcow2Image, piece: Allocation): void {
  const cs = image.g.clusterSize;
  for (const old of piece.old) {
    if (old.kind === 'normal' || old.kind === 'zero-alloc') queueFree(image, old.host, cs, 'never');
    else if (old.kind === 'compressed') queueFree(image, old.host, old.compressedLength, 'never');
  }
}

/** planWrite's decision for new data (see above), or undefined having changed nothing. */
export function planNewClusters(image: Qcow2Image, offset: number, length: number): Allocation | undefined {
  if (image.lock.locked || !image.preparedForWrite || !image.writable || image.failure !== undefined || image.overlap === 'all') return undefined;
  if (image.lazyRefcounts && (image.incompatible & INCOMPAT_DIRTY) === 0n) return undefined;
  const { clusterSize: cs, l2Entries } = image.g;
  const first = Math.floor(offset / cs);
  const count = Math.ceil((offset + length) / cs) - first;
  const l1Index = Math.floor(first / l2Entries);
  if (Math.floor((first + count - 1) / l2Entries) !== l1Index) return undefined;
  const table = readL1Entry(image.l1, l1Index * 8);
  if (table.offset === 0 || !table.copied) return undefined;
  const old: L2Entry[] = [];
  const cached = forEachCachedEntry(image, first, count, (_, entry) => {
    if (owned(entry)) return false;
    old.push(entry);
  });
  if (!cached) return undefined;
  const host = allocateCachedClusters(image, count);
  if (host === undefined) return undefined;
  return { kind: 'alloc', first, count, host, old, fresh: image.freshFrom !== undefined && host >= image.freshFrom };
}

/** linkPieces of a single allocation without the lock and without waiting (updateCachedEntries); false, having changed nothing, if that cannot be. */
export function linkCached(image: Qcow2Image, pieces: Piece[]): boolean {
  const piece = pieces[0];
  if (pieces.length !== 1 || piece?.kind !== 'alloc' || image.lock.locked) return false;
  if (!updateCachedEntries(image, piece.first, piece.count, pointAt(image, piece))) return false;
  freeOld(image, piece);
  return true;
}

/**
 * A refcount block as the cache holds it, without waiting: its offset and
 * content, null where the reftable has none, undefined where it would take
 * I/O or the entry is bad (the awaiting way loads it, or reports it).
 */
function cachedRefblock(image: Qcow2Image, index: number): { offset: number; block: Buffer } | null | undefined {
  if (index >= image.reftable.length / 8) return null;
  const { offset, reserved } = readReftableEntry(image.reftable, index * 8);
  if (reserved || offset % image.g.clusterSize !== 0) return undefined;
  if (offset === 0) return null;
  const block = image.refcountCache.peek(offset);
  return block === undefined ? undefined : { offset, block };
}

/**
 * allocateNonZero without waiting, for `count` clusters inside the file as
 * it is: every refcount block it reads or changes cached and present, no
 * new block or growth needed, the run clear of metadata (cachedOverlap).
 * Returns the host offset, or undefined having changed nothing.
 */
function allocateCachedClusters(image: Qcow2Image, count: number): number | undefined {
  const { refblockEntries, clusterSize } = image.g;
  const search = { start: image.freeClusterIndex, cluster: image.freeClusterIndex };
  while (search.cluster - search.start < count) {
    const index = Math.floor(search.cluster / refblockEntries);
    const cached = cachedRefblock(image, index);
    if (cached === undefined) return undefined;
    scanRefblock(image, cached?.block, index, search, count);
  }
  const { start } = search;
  const end = (start + count) * clusterSize;
  if (start === 0 || end > image.file.length || cachedOverlap(image, start * clusterSize, count * clusterSize) !== undefined) return undefined;
  const blocks: { offset: number; block: Buffer; from: number; to: number }[] = [];
  for (let cluster = start; cluster < start + count; ) {
    const index = Math.floor(cluster / refblockEntries);
    const cached = cachedRefblock(image, index);
    if (cached === undefined || cached === null) return undefined;
    const to = Math.min(start + count, (index + 1) * refblockEntries);
    blocks.push({ ...cached, from: cluster, to });
    cluster = to;
  }
  for (const { offset, block, from, to } of blocks) adjustInBlock(image, block, offset, from, to, 1);
  image.freeClusterIndex = start + count;
  noteFileEnd(image, end);
  return start * clusterSize;
}
