/**
 * Refcounts: lookups through the refcount block cache, first-fit cluster
 * allocation (QEMU's alloc_clusters_noref and free_cluster_index), new
 * refcount blocks and a growing refcount table written in crash-safe order,
 * byte allocation for compressed clusters, and frees deferred until the
 * pointers they drop are on disk. Called with the metadata lock held.
 */
import { BlockIoError } from '../../core/errors.js';
import {
  HEADER_REFTABLE_OFFSET,
  hex,
  type L2Entry,
  MAX_REFTABLE_BYTES,
  readRefcount,
  readReftableEntry,
  refcountMetadataClusters,
  reftableEntryHex,
  refcountMax,
  writeRefcount,
  writeReftableEntry,
} from './qcow2-format.js';
import {
  type DiscardType,
  flushFile,
  growFile,
  type PendingFree,
  type Qcow2Image,
  signalCorruption,
  writeHeaderField,
} from './qcow2-image.js';
import { writeMetadata } from './qcow2-overlap.js';

/** Offset of the refcount block for block index `index`, or 0 if there is none. */
async function refblockOffset(image: Qcow2Image, index: number): Promise<number> {
  if (index >= image.reftable.length / 8) return 0;
  const { offset, reserved } = readReftableEntry(image.reftable, index * 8);
  if (reserved) await signalCorruption(image, `Reftable entry has reserved bits set (reftable index: ${hex(index)})`);
  if (offset % image.g.clusterSize !== 0) {
    await signalCorruption(image, `Refblock offset 0x${reftableEntryHex(image.reftable, index * 8)} unaligned (reftable index: ${hex(index)})`);
  }
  return offset;
}

/** The refcount block for block index `index` (through the cache), or undefined if there is none. */
export async function refblock(image: Qcow2Image, index: number): Promise<Buffer | undefined> {
  const offset = await refblockOffset(image, index);
  return offset === 0 ? undefined : image.refcountCache.get(offset);
}

export async function getRefcount(image: Qcow2Image, cluster: number): Promise<number> {
  const { refblockEntries, refcountOrder } = image.g;
  const block = await refblock(image, Math.floor(cluster / refblockEntries));
  return block === undefined ? 0 : readRefcount(block, cluster % refblockEntries, refcountOrder);
}

/**
 * Adds `delta` to the refcounts of `count` clusters from `first` (their
 * refcount blocks must exist); returns the last new value. A block is
 * changed only if none of its values would leave the valid range.
 */
export async function adjustRefcounts(image: Qcow2Image, first: number, count: number, delta: number): Promise<number> {
  const { refblockEntries } = image.g;
  let last = 0;
  for (let cluster = first; cluster < first + count; ) {
    const index = Math.floor(cluster / refblockEntries);
    const offset = await refblockOffset(image, index);
    if (offset === 0) throw new BlockIoError('EIO', `qcow2: no refcount block for cluster ${cluster}`);
    const blockEnd = Math.min(first + count, (index + 1) * refblockEntries);
    last = adjustInBlock(image, await image.refcountCache.get(offset), offset, cluster, blockEnd, delta);
    cluster = blockEnd;
  }
  return last;
}

/** Adds `delta` to the refcounts of clusters `[from, to)`, all in `block` (at `offset`), after checking every one; returns the last. */
export function adjustInBlock(image: Qcow2Image, block: Buffer, offset: number, from: number, to: number, delta: number): number {
  const { refblockEntries, refcountOrder } = image.g;
  const max = refcountMax(refcountOrder);
  for (let c = from; c < to; c++) {
    const value = readRefcount(block, c % refblockEntries, refcountOrder) + delta;
    if (value < 0 || value > max) throw new BlockIoError('EIO', `qcow2: refcount of cluster ${c} would leave the range 0..${max}`);
  }
  let last = 0;
  for (let c = from; c < to; c++) {
    last = readRefcount(block, c % refblockEntries, refcountOrder) + delta;
    writeRefcount(block, c % refblockEntries, refcountOrder, last);
  }
  image.refcountCache.markDirty(offset);
  return last;
}

/** Zeroes to compare refcount ranges against (grown to the largest cluster seen). */
let zeroes = Buffer.alloc(0);

/** Whether bytes `[from, to)` of `block` are all zero. */
function allZero(block: Buffer, from: number, to: number): boolean {
  // A few bytes (the refcounts of one new cluster) are quicker to look at than to hand to memcmp.
  if (to - from <= 16) {
    for (let i = from; i < to; i++) if (block[i] !== 0) return false;
    return true;
  }
  if (zeroes.length < to - from) zeroes = Buffer.alloc(block.length);
  return block.compare(zeroes, 0, to - from, from, to) === 0;
}

/** First run of `count` clusters with refcount 0 from free_cluster_index; clusters nothing describes are free. */
async function findFree(image: Qcow2Image, count: number): Promise<number> {
  const search = { start: image.freeClusterIndex, cluster: image.freeClusterIndex };
  while (search.cluster - search.start < count) {
    const index = Math.floor(search.cluster / image.g.refblockEntries);
    scanRefblock(image, await refblock(image, index), index, search, count);
  }
  return search.start;
}

/**
 * One step of the search for `count` free clusters: goes over refcount
 * block `index` (undefined: there is none, all free) from `search.cluster`,
 * moving `search.start` past every cluster in use.
 */
export function scanRefblock(image: Qcow2Image, block: Buffer | undefined, index: number, search: { start: number; cluster: number }, count: number): void {
  const { refblockEntries, refcountOrder, refcountBits } = image.g;
  const blockStart = index * refblockEntries;
  const blockEnd = blockStart + refblockEntries;
  if (block === undefined) {
    search.cluster = blockEnd;
    return;
  }
  const wanted = Math.min(blockEnd, search.start + count);
  const bitFrom = (search.cluster - blockStart) * refcountBits;
  const bitTo = (wanted - blockStart) * refcountBits;
  if (bitFrom % 8 === 0 && bitTo % 8 === 0 && allZero(block, bitFrom / 8, bitTo / 8)) {
    search.cluster = wanted;
    return;
  }
  for (; search.cluster < blockEnd && search.cluster - search.start < count; search.cluster++) {
    if (readRefcount(block, search.cluster - blockStart, refcountOrder) !== 0) search.start = search.cluster + 1;
  }
}

/** The first block index in the clusters `[first, first + count)` without a refcount block. */
async function missingRefblock(image: Qcow2Image, first: number, count: number): Promise<number | undefined> {
  const { refblockEntries } = image.g;
  const last = Math.floor((first + count - 1) / refblockEntries);
  for (let index = Math.floor(first / refblockEntries); index <= last; index++) {
    if ((await refblockOffset(image, index)) === 0) return index;
  }
  return undefined;
}

/**
 * Allocates `count` contiguous clusters (refcount 0 → 1) and grows the file
 * to cover the first `bytes` of them. Returns the host offset. As in QEMU,
 * the search index moves past the run first, so a refcount block the run
 * needs lands after it; the run is then searched for again.
 */
export async function allocateClusters(image: Qcow2Image, count: number, bytes = count * image.g.clusterSize): Promise<number> {
  const { clusterSize } = image.g;
  for (;;) {
    const start = await findFree(image, count);
    image.freeClusterIndex = start + count;
    const missing = await missingRefblock(image, start, count);
    if (missing === undefined) {
      await adjustRefcounts(image, start, count, 1);
      await growFile(image, start * clusterSize + bytes);
      return start * clusterSize;
    }
    await addRefblock(image, missing);
    // As QEMU's update_refcount on -EAGAIN: the search starts over from the run.
    image.freeClusterIndex = Math.min(image.freeClusterIndex, start);
  }
}

/** allocateClusters that refuses offset 0, which only a corrupt refcount for the header can produce. */
export async function allocateNonZero(image: Qcow2Image, count: number, what: string, bytes?: number): Promise<number> {
  const offset = await allocateClusters(image, count, bytes);
  if (offset === 0) await signalCorruption(image, `Preventing invalid allocation of ${what} at offset 0`);
  return offset;
}

/** Writes the dirty refcount blocks (never ahead of anything: refcounts on disk may only be too high). */
export async function writeDirtyRefblocks(image: Qcow2Image): Promise<void> {
  for (const [offset, block] of image.refcountCache.dirty()) {
    await writeMetadata(image, offset, block, 'refcount block');
    image.refcountCache.markClean(offset);
  }
}

/** Publishes refcount block `offset` at reftable index `index`: the block is on disk before the pointer. */
async function publishRefblock(image: Qcow2Image, index: number, offset: number, block: Buffer): Promise<void> {
  await writeMetadata(image, offset, block, 'refcount block');
  await writeDirtyRefblocks(image);
  await flushFile(image);
  const entry = Buffer.alloc(8);
  writeReftableEntry(entry, 0, offset);
  await writeMetadata(image, image.reftableOffset + index * 8, entry, 'refcount table');
  await flushFile(image);
  entry.copy(image.reftable, index * 8);
  image.metadata.set(offset / image.g.clusterSize, 'refblock');
  await image.refcountCache.put(offset, block, false);
}

/**
 * Adds the refcount block for block index `index` (QEMU's
 * alloc_refcount_block): at the first free cluster, describing itself when
 * it lies in its own range, else counted by the block covering it (which
 * may have to be added first). A full refcount table grows. Callers search
 * again afterwards.
 */
async function addRefblock(image: Qcow2Image, index: number): Promise<void> {
  const { refblockEntries, refcountOrder, clusterSize } = image.g;
  const cluster = await findFree(image, 1);
  if (cluster === 0) await signalCorruption(image, 'Preventing invalid allocation of refcount block at offset 0');
  image.freeClusterIndex = cluster + 1;
  const ownIndex = Math.floor(cluster / refblockEntries);
  const block = Buffer.alloc(clusterSize);
  if (ownIndex === index) {
    writeRefcount(block, cluster % refblockEntries, refcountOrder, 1);
  } else if ((await refblockOffset(image, ownIndex)) !== 0) {
    await adjustRefcounts(image, cluster, 1, 1);
  } else {
    await addRefblock(image, ownIndex);
    image.freeClusterIndex = Math.min(image.freeClusterIndex, cluster);
    return;
  }
  await growFile(image, (cluster + 1) * clusterSize);
  if (index < image.reftable.length / 8) {
    await publishRefblock(image, index, cluster * clusterSize, block);
    return;
  }
  const blocksUsed = Math.max(index + 1, ownIndex + 1);
  await refcountArea(image, blocksUsed * refblockEntries, 0, false, { index, offset: cluster * clusterSize, block });
}

/**
 * New refcount structures at cluster `start` (QEMU's qcow2_refcount_area):
 * a refcount table, after the refcount blocks it needs from `start` on, the
 * whole able to describe the clusters below `start`, `additional` more and
 * itself, every cluster of it counting 1. `exact`: a table just that large,
 * else half as large again, room to grow without moving. `added`: a refcount
 * block already placed, for table index `index`. Blocks, then table, then
 * the header pointer reach the disk, each flushed; the old table is freed
 * last. Returns the cluster after the area.
 */
export async function refcountArea(
  image: Qcow2Image,
  start: number,
  additional: number,
  exact: boolean,
  added?: { index: number; offset: number; block: Buffer },
): Promise<number> {
  const { refblockEntries, refcountOrder, clusterSize } = image.g;
  const total = refcountMetadataClusters(start + additional, clusterSize, refcountOrder, !exact).blocks;
  const perCluster = clusterSize / 8;
  const tableSize = Math.ceil((exact ? total : total + Math.ceil(total / 2)) / perCluster) * perCluster;
  if (tableSize * 8 > MAX_REFTABLE_BYTES) throw new BlockIoError('EFBIG', 'qcow2: the refcount table cannot grow any further');
  const table = Buffer.alloc(tableSize * 8);
  image.reftable.copy(table, 0, 0, Math.min(image.reftable.length, table.length));
  const blocks = new Map<number, Buffer>();
  if (added !== undefined) {
    writeReftableEntry(table, added.index * 8, added.offset);
    blocks.set(added.offset, added.block);
  }
  const areaIndex = Math.floor(start / refblockEntries);
  let missing = 0;
  for (let i = areaIndex; i < total; i++) if (readReftableEntry(table, i * 8).offset === 0) missing++;
  const tableStart = start + missing;
  const end = tableStart + tableSize / perCluster;
  let cursor = start;
  for (let i = areaIndex; i < total; i++) {
    let offset = readReftableEntry(table, i * 8).offset;
    let block: Buffer;
    if (offset === 0) {
      offset = cursor++ * clusterSize;
      writeReftableEntry(table, i * 8, offset);
      block = Buffer.alloc(clusterSize);
    } else {
      block = blocks.get(offset) ?? (await image.refcountCache.get(offset));
    }
    const covered = i * refblockEntries;
    for (let j = Math.max(0, start - covered); j < Math.min(end - covered, refblockEntries); j++) {
      writeRefcount(block, j, refcountOrder, 1);
    }
    blocks.set(offset, block);
  }
  await growFile(image, end * clusterSize);
  for (const [offset, block] of blocks) {
    await writeMetadata(image, offset, block, 'refcount block');
    image.refcountCache.markClean(offset);
  }
  await writeDirtyRefblocks(image);
  await flushFile(image);
  await writeMetadata(image, tableStart * clusterSize, table);
  await flushFile(image);
  const pointer = Buffer.alloc(12);
  pointer.writeBigUInt64BE(BigInt(tableStart * clusterSize), 0);
  pointer.writeUInt32BE(tableSize / perCluster, 8);
  await writeHeaderField(image, HEADER_REFTABLE_OFFSET, pointer);
  const old = { offset: image.reftableOffset, bytes: image.reftableClusters * clusterSize };
  image.reftable = table;
  image.reftableOffset = tableStart * clusterSize;
  image.reftableClusters = tableSize / perCluster;
  for (const [offset, block] of blocks) {
    image.metadata.set(offset / clusterSize, 'refblock');
    await image.refcountCache.put(offset, block, false);
  }
  // The header no longer points at the old table (flushed above), so it can be freed right away.
  await applyFrees(image, [{ first: old.offset / clusterSize, last: (old.offset + old.bytes - 1) / clusterSize, type: 'other' }]);
  return end;
}

/**
 * Allocates `size` bytes for compressed data (QEMU's qcow2_alloc_bytes):
 * packed after the previous compressed cluster while it fits, each host
 * cluster touched gaining one reference.
 */
export async function allocateBytes(image: Qcow2Image, size: number): Promise<number> {
  const cs = image.g.clusterSize;
  let offset = image.freeByteOffset;
  if (offset !== 0 && (await getRefcount(image, Math.floor(offset / cs))) >= refcountMax(image.g.refcountOrder)) offset = 0;
  let freeInCluster = cs - (offset % cs);
  for (;;) {
    if (offset === 0 || freeInCluster < size) {
      const fresh = await findFree(image, 1);
      if (fresh === 0) await signalCorruption(image, 'Preventing invalid allocation of compressed cluster at offset 0');
      image.freeClusterIndex = fresh + 1;
      if (offset === 0 || Math.ceil(offset / cs) !== fresh) {
        offset = fresh * cs;
        freeInCluster = cs;
      } else {
        freeInCluster += cs;
      }
    }
    const first = Math.floor(offset / cs);
    const count = Math.floor((offset + size - 1) / cs) - first + 1;
    const missing = await missingRefblock(image, first, count);
    if (missing === undefined) {
      await adjustRefcounts(image, first, count, 1);
      break;
    }
    await addRefblock(image, missing);
    image.freeClusterIndex = Math.min(image.freeClusterIndex, first);
    offset = 0;
  }
  await growFile(image, offset + size);
  image.freeByteOffset = (offset + size) % cs === 0 ? 0 : offset + size;
  return offset;
}

/** Queues one reference less on every cluster `[offset, offset + length)` touches, applied by `applyFrees`. */
export function queueFree(image: Qcow2Image, offset: number, length: number, type: DiscardType): void {
  const cs = image.g.clusterSize;
  image.pendingFrees.push({ first: Math.floor(offset / cs), last: Math.floor((offset + length - 1) / cs), type });
}

/** Queues the drop of the reference an L2 entry held: its cluster, or a compressed entry's bytes; nothing if it held none. */
export function queueFreeEntry(image: Qcow2Image, entry: L2Entry, type: DiscardType): void {
  if (entry.kind === 'normal' || entry.kind === 'zero-alloc' || entry.kind === 'compressed') {
    queueFree(image, entry.host, entry.kind === 'compressed' ? entry.compressedLength : image.g.clusterSize, type);
  }
}

/**
 * Drops the queued references. A cluster whose refcount reaches 0 leaves
 * the caches (its old tables must never be written back over new data),
 * becomes allocatable again and, if its type is passed down, is discarded.
 * A refcount that is already 0 stays so (only a corrupt image has one).
 */
export async function applyFrees(image: Qcow2Image, frees: readonly PendingFree[]): Promise<void> {
  const cs = image.g.clusterSize;
  for (const free of frees) {
    for (let cluster = free.first; cluster <= free.last; cluster++) {
      if ((await getRefcount(image, cluster)) === 0) continue;
      if ((await adjustRefcounts(image, cluster, 1, -1)) !== 0) continue;
      image.l2Cache.dropRange(cluster * cs, (cluster + 1) * cs);
      image.metadata.delete(cluster);
      if (Math.floor(image.freeByteOffset / cs) === cluster) image.freeByteOffset = 0;
      image.freeClusterIndex = Math.min(image.freeClusterIndex, cluster);
      const bytes = Math.min(cs, image.file.length - cluster * cs);
      if (image.passDiscard[free.type] && bytes > 0) await image.file.discard(cluster * cs, bytes);
    }
  }
}
