/**
 * What qemu-img check -r changes on disk: stored refcounts read and set
 * through the refcount block cache, OFLAG_COPIED flags, the corrupt and
 * dirty bits, and a complete new refcount structure (QEMU 7.2's
 * rebuild_refcount_structure) when refcounts are too low to be patched.
 *
 * Crash safety: setting a refcount to the computed value only lowers a
 * leak or raises a too-low count, so any subset of those writes is safe.
 * A rebuild writes the new refcount blocks and table into clusters nothing
 * references, flushes, and only then switches the header to them; a crash
 * before the switch leaves the old structure, after it the old one leaks.
 */
import { BlockIoError, type Errno, strerror, toBlockIoError } from '../../core/errors.js';
import type { CheckRun, RefTable } from './qcow2-check-walk.js';
import {
  HEADER_REFTABLE_OFFSET,
  INCOMPAT_CORRUPT,
  INCOMPAT_DIRTY,
  MAX_REFTABLE_BYTES,
  readRefcount,
  readReftableEntry,
  writeRefcount,
  writeReftableEntry,
} from './qcow2-format.js';
import { flushFile, type Qcow2Image, signalCorruption, writeHeaderField, writeIncompatible } from './qcow2-image.js';
import { checkOverlap, writeMetadata } from './qcow2-overlap.js';
import { writeDirtyRefblocks } from './qcow2-refcount.js';

/** A repair step that failed, as QEMU reports it (error_report) before `Check failed`: `ERROR writing refblock: Input/output error`. */
export class Qcow2RepairError extends BlockIoError {
  constructor(errno: Errno, what: string) {
    super(errno, `${what}: ${strerror(errno)}`);
    this.name = 'Qcow2RepairError';
  }
}

/** The stored refcount block of reftable index `index`: null when there is none, undefined when its offset is unaligned. */
export async function storedBlock(image: Qcow2Image, index: number): Promise<Buffer | null | undefined> {
  if (index >= image.reftable.length / 8) return null;
  const { offset } = readReftableEntry(image.reftable, index * 8);
  if (offset === 0) return null;
  if (offset % image.g.clusterSize !== 0) return undefined;
  return image.refcountCache.get(offset);
}

/** The refcount the image stores for `cluster`; undefined when it cannot be read (unaligned refcount block). */
export async function storedRefcount(image: Qcow2Image, cluster: number): Promise<number | undefined> {
  const { refblockEntries, refcountOrder } = image.g;
  const block = await storedBlock(image, Math.floor(cluster / refblockEntries));
  if (block === undefined) return undefined;
  return block === null ? 0 : readRefcount(block, cluster % refblockEntries, refcountOrder);
}

/**
 * Sets the stored refcount of `cluster`, whose refcount block exists, to
 * `value` in the cache (written back by the caller). A cluster that becomes
 * free leaves the caches, can be allocated again and is discarded in the
 * file (QEMU frees it with QCOW2_DISCARD_ALWAYS; the file node passes it
 * on if opened with discard=unmap, as QEMU's protocol children are).
 */
export async function setStoredRefcount(image: Qcow2Image, cluster: number, value: number): Promise<void> {
  const { refblockEntries, refcountOrder, clusterSize } = image.g;
  const { offset } = readReftableEntry(image.reftable, Math.floor(cluster / refblockEntries) * 8);
  const block = await image.refcountCache.get(offset);
  writeRefcount(block, cluster % refblockEntries, refcountOrder, value);
  image.refcountCache.markDirty(offset);
  if (value !== 0) return;
  image.l2Cache.dropRange(cluster * clusterSize, (cluster + 1) * clusterSize);
  image.metadata.delete(cluster);
  image.freeClusterIndex = Math.min(image.freeClusterIndex, cluster);
  if (Math.floor(image.freeByteOffset / clusterSize) === cluster) image.freeByteOffset = 0;
  const bytes = Math.min(clusterSize, image.file.length - cluster * clusterSize);
  if (bytes > 0) await image.file.discard(cluster * clusterSize, bytes);
}

/** Sets or clears OFLAG_COPIED of active L1 entry `index`, on disk. */
export async function setL1Copied(image: Qcow2Image, index: number, copied: boolean): Promise<void> {
  const at = index * 8;
  const high = image.l1.readUInt32BE(at);
  image.l1.writeUInt32BE((copied ? high | 0x80000000 : high & 0x7fffffff) >>> 0, at);
  await writeMetadata(image, image.l1Offset + at, image.l1.subarray(at, at + 8), 'active L1 table');
}

/** Writes back an active L2 table whose OFLAG_COPIED flags were repaired. */
export async function writeL2Table(image: Qcow2Image, offset: number, table: Buffer): Promise<void> {
  await writeMetadata(image, offset, table, 'active L2 table');
  image.l2Cache.dropRange(offset, offset + image.g.clusterSize);
}

/** The refcount write-back a repair ends with. */
export async function writeRepairs(image: Qcow2Image): Promise<void> {
  await writeDirtyRefblocks(image);
  await flushFile(image);
}

/** Clears the dirty bit once the refcounts are right (qcow2_mark_clean). */
export async function markClean(image: Qcow2Image): Promise<void> {
  if ((image.incompatible & INCOMPAT_DIRTY) === 0n) return;
  await writeRepairs(image);
  await writeIncompatible(image, image.incompatible & ~INCOMPAT_DIRTY);
  image.keepDirty = false;
}

/** Clears the corrupt bit (qcow2_mark_consistent). */
export async function markConsistent(image: Qcow2Image): Promise<void> {
  if ((image.incompatible & INCOMPAT_CORRUPT) === 0n) return;
  await writeIncompatible(image, image.incompatible & ~INCOMPAT_CORRUPT);
}

/**
 * Runs one step of a rebuild; a failure becomes the error QEMU reports
 * (`what: strerror`), after the corruption message if this step signalled it.
 */
async function rebuildStep(run: CheckRun, what: string, step: () => Promise<void>): Promise<void> {
  const signalled = run.image.failure !== undefined;
  try {
    await step();
  } catch (error) {
    if (!signalled && run.image.failure !== undefined) run.messages.push(run.image.failure.message);
    throw new Qcow2RepairError(toBlockIoError(error).errno, what);
  }
}

/** Whether `[offset, offset + length)` touches a cluster an entry of the old refcount table points into, unaligned ones too. */
function hitsOldRefblock(image: Qcow2Image, offset: number, length: number): boolean {
  const cs = image.g.clusterSize;
  const start = Math.floor(offset / cs) * cs;
  const end = Math.ceil((offset + length) / cs) * cs;
  for (let at = 0; at < image.reftable.length; at += 8) {
    const entry = readReftableEntry(image.reftable, at).offset;
    if (entry !== 0 && entry < end && start < entry + cs) return true;
  }
  return false;
}

/**
 * Writes part of the new refcount structure (into clusters the count left
 * free). QEMU's overlap check still sees the old refcount table
 * then, whose blocks count as metadata even where an entry is unaligned
 * (the count skipped those): writing over one marks the image corrupt.
 */
async function rebuildWrite(run: CheckRun, what: string, offset: number, buf: Buffer): Promise<void> {
  const { image } = run;
  await rebuildStep(run, what, async () => {
    await checkOverlap(image, offset, buf.length);
    if (image.overlap !== 'none' && image.overlap !== 'constant' && hitsOldRefblock(image, offset, buf.length)) {
      await signalCorruption(image, 'Preventing invalid write on metadata (overlaps with refcount block)');
    }
    await writeMetadata(image, offset, buf);
  });
}

/**
 * Takes `count` contiguous free clusters of the computed table from
 * `from.value` on (QEMU's alloc_clusters_imrt): their count becomes 1, the
 * table grows if the run reaches its end, and `from` moves to the first
 * free cluster seen. Returns the first cluster.
 */
function allocInTable(table: RefTable, count: number, from: { value: number }): number {
  let cluster = from.value;
  let free = 0;
  let firstGap = true;
  for (; cluster < table.size && free < count; cluster++) {
    if (table.get(cluster) !== 0) {
      free = 0;
      continue;
    }
    free++;
    if (firstGap) {
      from.value = cluster;
      firstGap = false;
    }
  }
  if (free < count) table.grow(cluster + count - free);
  cluster -= free;
  for (let i = 0; i < count; i++) table.set(cluster + i, 1);
  return cluster;
}

/**
 * Writes the refcount blocks covering the counted clusters of
 * `[first, end)` from the computed table, allocating the missing ones (in
 * their own range when possible) and noting them in `reftable`. Returns
 * whether the reftable had to grow (rebuild_refcounts_write_refblocks).
 */
async function writeRefblocks(run: CheckRun, reftable: number[], first: number, end: number): Promise<boolean> {
  const { image, table } = run;
  const { refblockEntries, refcountOrder, clusterSize } = image.g;
  const from = { value: 0 };
  let grown = false;
  for (let cluster = table.nextCounted(first, end); cluster < end; cluster = table.nextCounted(cluster + 1, end)) {
    const index = Math.floor(cluster / refblockEntries);
    const start = index * refblockEntries;
    let offset = reftable[index] ?? 0;
    if (offset === 0) {
      from.value = Math.max(from.value, start);
      const at = allocInTable(table, 1, from);
      offset = at * clusterSize;
      end = Math.max(end, at + 1);
      if (reftable.length <= index) {
        const entries = Math.ceil(((index + 1) * 8) / clusterSize) * (clusterSize / 8);
        if (entries * 8 > MAX_REFTABLE_BYTES) throw new Qcow2RepairError('EFBIG', 'ERROR allocating reftable');
        while (reftable.length < entries) reftable.push(0);
        grown = true;
      }
      reftable[index] = offset;
    }
    const block = Buffer.alloc(clusterSize);
    for (let j = 0; j < refblockEntries; j++) {
      const count = table.get(start + j);
      if (count !== 0) writeRefcount(block, j, refcountOrder, count);
    }
    await rebuildWrite(run, 'ERROR writing refblock', offset, block);
    cluster = start + refblockEntries - 1;
  }
  return grown;
}

/**
 * Replaces the refcount table and blocks by new ones holding the computed
 * refcounts (rebuild_refcount_structure). The new structure counts itself;
 * the old one is left unreferenced, for the leak repair that follows.
 */
export async function rebuildRefcountStructure(run: CheckRun): Promise<void> {
  const { image, table } = run;
  const cs = image.g.clusterSize;
  await writeDirtyRefblocks(image);
  image.refcountCache.dropRange(0, Number.MAX_SAFE_INTEGER);
  const reftable: number[] = [];
  await writeRefblocks(run, reftable, 0, table.size);
  let start: number;
  let clusters: number;
  // The table's own clusters may need refcount blocks, which may need a larger table: repeat until it fits.
  do {
    clusters = Math.ceil((reftable.length * 8) / cs);
    start = allocInTable(table, clusters, { value: 0 });
  } while (await writeRefblocks(run, reftable, start, start + clusters));
  const buf = Buffer.alloc(reftable.length * 8);
  reftable.forEach((offset, i) => writeReftableEntry(buf, i * 8, offset));
  await rebuildWrite(run, 'ERROR writing reftable', start * cs, buf);
  await flushFile(image);
  const pointer = Buffer.alloc(12);
  pointer.writeBigUInt64BE(BigInt(start * cs), 0);
  pointer.writeUInt32BE(clusters, 8);
  await rebuildStep(run, 'ERROR setting reftable', () => writeHeaderField(image, HEADER_REFTABLE_OFFSET, pointer));
  image.reftable = buf;
  image.reftableOffset = start * cs;
  image.reftableClusters = clusters;
  for (const [cluster, kind] of image.metadata) if (kind === 'refblock') image.metadata.delete(cluster);
  for (const offset of reftable) if (offset !== 0) image.metadata.set(offset / cs, 'refblock');
  image.freeClusterIndex = 0;
  image.freeByteOffset = 0;
}
