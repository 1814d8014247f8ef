/**
 * Zero clusters turned into what a v2 image can say (QEMU's
 * qcow2_expand_zero_clusters, for amend's downgrade), lock held: without
 * a backing file a zero cluster that has no data cluster becomes
 * unallocated (it reads as zeroes anyway); with one it gets a new cluster,
 * counted once per table that refers to its L2 table; every data cluster
 * behind a zero flag is written with zeroes, and the flag cleared, unless
 * other tables point at it too: it then keeps their data, and the entry
 * gets a new cluster (where QEMU 7.2 zeroes a snapshot's data). The
 * active tables go through the L2 cache, which is then written back and
 * emptied (a snapshot may share them); the snapshots' tables are read and
 * written in place.
 */
import { readL1Entry, readL2Entry, writeL2Entry } from './qcow2-format.js';
import { type Qcow2Image, readFile, writeFile } from './qcow2-image.js';
import { checkOverlap } from './qcow2-overlap.js';
import { adjustRefcounts, allocateNonZero, getRefcount } from './qcow2-refcount.js';
import { syncMetadata } from './qcow2-sync.js';

/** An L2 slice to expand, and what to do with it once changed. */
type SliceAccess = (offset: number) => Promise<{ slice: Buffer; changed: () => Promise<void> }>;

/** Expands the zero clusters of every L2 table an L1 table points at (expand_zero_clusters_in_l1). */
async function expandL1(image: Qcow2Image, l1: Buffer, access: SliceAccess): Promise<void> {
  const cs = image.g.clusterSize;
  const sliceBytes = image.l2SliceEntries * 8;
  for (let i = 0; i < l1.length; i += 8) {
    const { offset: l2Offset } = readL1Entry(l1, i);
    if (l2Offset === 0) continue;
    const tableRefcount = await getRefcount(image, l2Offset / cs);
    for (let sliceOffset = l2Offset; sliceOffset < l2Offset + cs; sliceOffset += sliceBytes) {
      const { slice, changed } = await access(sliceOffset);
      let dirty = false;
      for (let at = 0; at < slice.length; at += 8) {
        const entry = readL2Entry(slice, at, image.g, image.version);
        if (entry.kind !== 'zero-plain' && entry.kind !== 'zero-alloc') continue;
        dirty = true;
        if (entry.kind === 'zero-plain' && image.backing === undefined) {
          slice.writeBigUInt64BE(0n, at);
          continue;
        }
        let host = entry.host;
        // A data cluster other L2 tables also point at keeps their data (QEMU 7.2 writes zeroes over a snapshot's data there).
        const shared = entry.kind === 'zero-alloc' && (await getRefcount(image, host / cs)) > tableRefcount;
        if (entry.kind === 'zero-plain' || shared) {
          host = await allocateNonZero(image, 1, 'data cluster');
          // Every table that shares this L2 table refers to the new cluster.
          if (tableRefcount > 1) await adjustRefcounts(image, host / cs, 1, tableRefcount - 1);
          if (shared) await adjustRefcounts(image, entry.host / cs, 1, -tableRefcount);
        }
        await checkOverlap(image, host, cs);
        await image.file.writeZeroes(host, cs);
        image.unflushed = true;
        writeL2Entry(slice, at, host, tableRefcount === 1, false);
      }
      if (dirty) await changed();
    }
  }
}

export async function expandZeroClusters(image: Qcow2Image): Promise<void> {
  await expandL1(image, image.l1.subarray(0, image.l1Size * 8), async (offset) => ({
    slice: await image.l2Cache.get(offset),
    changed: async () => image.l2Cache.markDirty(offset),
  }));
  // Snapshots may share the active L2 tables: what changed goes to disk first, and nothing cached may be written over them.
  await syncMetadata(image);
  image.l2Cache.dropRange(0, Number.MAX_SAFE_INTEGER);
  const sliceBytes = image.l2SliceEntries * 8;
  for (const table of image.snapshots.l1Tables) {
    const l1 = Buffer.alloc(table.size * 8);
    await readFile(image.file, table.offset, l1);
    await expandL1(image, l1, async (offset) => {
      const slice = Buffer.alloc(sliceBytes);
      await readFile(image.file, offset, slice);
      return {
        slice,
        changed: async () => {
          await checkOverlap(image, offset, sliceBytes, 'inactive L2 table');
          await writeFile(image, offset, slice);
        },
      };
    });
  }
}
