/**
 * Emptying the image (QEMU's qcow2_make_empty), what qemu-img commit does
 * to the image it committed. A v3 image without internal snapshots or
 * bitmaps is rebuilt from nothing, as QEMU's make_completely_empty does:
 * marked dirty (its refcounts are about to be wrong), the L1 table and the
 * clusters after the header zeroed, then the refcount table placed in
 * cluster 1, its first block in cluster 2 and the L1 table (same size, all
 * zero) from cluster 3, the first clusters counted, the image marked clean
 * with a rewritten header and the file cut after the L1 table: the file QEMU
 * leaves, byte for byte. Any other image has every cluster discarded for
 * good instead (QCOW2_DISCARD_SNAPSHOT).
 */
import { HEADER_L1_OFFSET, INCOMPAT_DIRTY, writeReftableEntry } from './qcow2-format.js';
import { headerWithBacking, readFixedHeader } from './qcow2-header.js';
import { checkUsable, flushFile, type Qcow2Image, readFile, writeFile, writeHeaderField, writeIncompatible } from './qcow2-image.js';
import { adjustInBlock, writeDirtyRefblocks } from './qcow2-refcount.js';
import { prepareMetadataChange, syncMetadata } from './qcow2-sync.js';
import { discardForGood, rewriteClusters } from './qcow2-zero.js';

/** make_completely_empty, with the lock held and nothing in flight. */
async function rebuildEmpty(image: Qcow2Image, l1Clusters: number): Promise<void> {
  const cs = image.g.clusterSize;
  await syncMetadata(image);
  image.l2Cache.dropRange(0, Infinity);
  image.refcountCache.dropRange(0, Infinity);
  await writeIncompatible(image, image.incompatible | INCOMPAT_DIRTY);
  await image.file.writeZeroes(image.l1Offset, l1Clusters * cs);
  image.l1.fill(0);
  await image.file.writeZeroes(cs, (2 + l1Clusters) * cs);
  await flushFile(image);

  const pointers = Buffer.alloc(20);
  pointers.writeBigUInt64BE(BigInt(3 * cs), 0);
  pointers.writeBigUInt64BE(BigInt(cs), 8);
  pointers.writeUInt32BE(1, 16);
  await writeHeaderField(image, HEADER_L1_OFFSET + 4, pointers);
  image.l1Offset = 3 * cs;
  image.l1Dirty = undefined;
  image.reftable = Buffer.alloc(cs);
  image.reftableOffset = cs;
  image.reftableClusters = 1;
  const entry = Buffer.alloc(8);
  writeReftableEntry(entry, 0, 2 * cs);
  await writeHeaderField(image, cs, entry);
  writeReftableEntry(image.reftable, 0, 2 * cs);

  // The header, the refcount table, the refcount block and the L1 table are the image's only clusters.
  const used = 3 + Math.ceil((image.l1Size * 8) / cs);
  const block = Buffer.alloc(cs);
  await image.refcountCache.put(2 * cs, block, false);
  adjustInBlock(image, block, 2 * cs, 0, used, 1);
  image.metadata.clear();
  image.metadata.set(2, 'refblock');
  image.inactiveL2 = undefined;
  image.pendingFrees.length = 0;
  image.freeClusterIndex = used;
  image.freeByteOffset = 0;
  await writeDirtyRefblocks(image);
  await flushFile(image);

  // qcow2_mark_clean: the dirty bit cleared with the whole header written anew (qcow2_update_header).
  const cluster0 = Buffer.alloc(cs);
  await readFile(image.file, 0, cluster0);
  const clean = image.incompatible & ~INCOMPAT_DIRTY;
  cluster0.writeBigUInt64BE(clean, 72);
  await writeFile(image, 0, headerWithBacking(cluster0, readFixedHeader(cluster0), { name: image.backingName, format: image.backingFormat }));
  await flushFile(image);
  image.incompatible = clean;

  const end = (3 + l1Clusters) * cs;
  await image.file.truncate(end);
  if (image.growAhead !== undefined) image.growAhead.end = end;
  if (image.freshFrom !== undefined) image.freshFrom = end;
}

export async function makeEmpty(image: Qcow2Image): Promise<void> {
  checkUsable(image);
  const cs = image.g.clusterSize;
  const l1Clusters = Math.ceil(image.l1Size / (cs / 8));
  const release = await image.ranges.acquire(0, Infinity, true);
  try {
    await image.lock.run(() => prepareMetadataChange(image));
    const rebuild =
      image.version >= 3 && image.snapshots.infos.length === 0 && image.bitmapDirectory === undefined && 3 + l1Clusters <= image.g.refblockEntries;
    if (rebuild) {
      await image.lock.run(() => rebuildEmpty(image, l1Clusters));
    } else {
      await rewriteClusters(image, 0, Math.ceil(image.size / cs), discardForGood, 'snapshot');
      await image.lock.run(() => syncMetadata(image));
    }
  } finally {
    release();
  }
}
