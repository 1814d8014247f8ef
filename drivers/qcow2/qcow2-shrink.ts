/**
 * Shrinking the image (QEMU's qcow2_co_truncate for a smaller size), in its
 * order: the clusters past the new end are discarded for good (their
 * entries cleared, their clusters freed and discarded in the file), the L2
 * tables past the new end go (their L1 entries zeroed on disk first; the L1
 * table keeps its size, as QEMU's does), refcount blocks that count nothing
 * but themselves leave the refcount table, the file is cut after the last
 * cluster still in use, and the header takes the new size last. A crash in
 * between leaves the old size with zeroes past the new end, or leaks.
 */
import { readL1Entry, readRefcount, readReftableEntry, sizeToL1, writeL1Entry, writeReftableEntry } from './qcow2-format.js';
import { flushFile, type Qcow2Image, signalCorruption } from './qcow2-image.js';
import { writeMetadata } from './qcow2-overlap.js';
import { queueFree, refblock } from './qcow2-refcount.js';
import { prepareMetadataChange, syncMetadata } from './qcow2-sync.js';
import { discardForGood, rewriteClusters } from './qcow2-zero.js';

/** Drops the L2 tables for L1 entries from `entries` on (qcow2_shrink_l1_table); lock held, metadata synced. */
async function shrinkL1(image: Qcow2Image, entries: number): Promise<void> {
  if (entries >= image.l1Size) return;
  await writeMetadata(image, image.l1Offset + entries * 8, Buffer.alloc((image.l1Size - entries) * 8), 'active L1 table');
  await flushFile(image);
  for (let index = image.l1Size - 1; index >= entries; index--) {
    const { offset } = readL1Entry(image.l1, index * 8);
    if (offset === 0) continue;
    queueFree(image, offset, image.g.clusterSize, 'always');
    writeL1Entry(image.l1, index * 8, 0, false);
  }
}

/** Whether a refcount block counts nothing but (if it lies in its own range) itself. */
function countsOnlyItself(image: Qcow2Image, block: Buffer, index: number, offset: number): boolean {
  const { clusterSize: cs, refblockEntries, refcountOrder } = image.g;
  const own = offset / cs;
  const ownEntry = Math.floor(own / refblockEntries) === index ? own % refblockEntries : -1;
  for (let entry = 0; entry < refblockEntries; entry++) {
    if (entry !== ownEntry && readRefcount(block, entry, refcountOrder) !== 0) return false;
  }
  return true;
}

/**
 * Takes refcount blocks that count nothing else out of the refcount table
 * (qcow2_shrink_reftable): the table is written without them first; then
 * each one's own cluster is freed, and the block leaves the cache unwritten.
 * Lock held, metadata synced.
 */
async function shrinkReftable(image: Qcow2Image): Promise<void> {
  const cs = image.g.clusterSize;
  const table = Buffer.from(image.reftable);
  const dropped: { index: number; offset: number }[] = [];
  for (let index = 0; index < table.length / 8; index++) {
    const block = await refblock(image, index);
    if (block === undefined) continue;
    const { offset } = readReftableEntry(image.reftable, index * 8);
    if (!countsOnlyItself(image, block, index, offset)) continue;
    writeReftableEntry(table, index * 8, 0);
    dropped.push({ index, offset });
  }
  if (dropped.length === 0) return;
  await writeMetadata(image, image.reftableOffset, table, 'refcount table');
  await flushFile(image);
  for (const { index, offset } of dropped) {
    const counted = Math.floor(offset / cs / image.g.refblockEntries);
    // A block counted by another one is freed there; one that counts itself is gone with the table entry.
    if (counted !== index) queueFree(image, offset, cs, 'other');
    writeReftableEntry(image.reftable, index * 8, 0);
    image.refcountCache.dropRange(offset, offset + cs);
    image.metadata.delete(offset / cs);
    image.freeClusterIndex = Math.min(image.freeClusterIndex, offset / cs);
    if (counted === index && image.passDiscard.other) await image.file.discard(offset, cs);
  }
  await syncMetadata(image);
}

/** The last cluster of the file with a reference (qcow2_get_last_cluster). */
async function lastUsedCluster(image: Qcow2Image): Promise<number> {
  const { clusterSize: cs, refblockEntries, refcountOrder } = image.g;
  const clusters = Math.ceil(image.file.length / cs);
  for (let index = Math.floor((clusters - 1) / refblockEntries); index >= 0; index--) {
    const block = await refblock(image, index);
    if (block === undefined) continue;
    for (let entry = Math.min(refblockEntries, clusters - index * refblockEntries) - 1; entry >= 0; entry--) {
      if (readRefcount(block, entry, refcountOrder) > 0) return index * refblockEntries + entry;
    }
  }
  return signalCorruption(image, 'There are no references in the refcount table.');
}

/**
 * Discards what lies past `size` and frees the structures that served it
 * (range lock held on everything, no request in flight); the caller writes
 * the new size into the header.
 */
export async function shrinkImage(image: Qcow2Image, size: number): Promise<void> {
  const { clusterSize: cs, clusterBits } = image.g;
  const first = Math.ceil(size / cs);
  const end = Math.ceil(image.size / cs);
  if (end > first) {
    await rewriteClusters(image, first, end - first, discardForGood, 'always');
  }
  await image.lock.run(async () => {
    await prepareMetadataChange(image);
    await syncMetadata(image);
    await shrinkL1(image, Number(sizeToL1(BigInt(size), clusterBits)));
    await syncMetadata(image);
    await shrinkReftable(image);
    const needed = ((await lastUsedCluster(image)) + 1) * cs;
    if (image.growAhead !== undefined) image.growAhead.end = Math.min(image.growAhead.end, needed);
    // As in QEMU, a file that cannot be cut only keeps its tail.
    if (needed < image.file.length) await image.file.truncate(needed).catch(() => undefined);
  });
}
