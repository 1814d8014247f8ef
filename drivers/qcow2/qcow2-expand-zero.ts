/**
 * Zero clusters turned into what a v2 image can say (QEMU's
 * qcow2_expand_zero_clusters, for amend's downgrade), lock held: without
 * a backing file a zero cluster that has no data cluster becomes
 * unallocated (it reads as zeroes anyway); with one it gets a new cluster;
 * every data cluster behind a zero flag is written with zeroes, and the
 * flag cleared. Internal snapshots that hold zero clusters are refused:
 * only the active tables are rewritten here.
 */
import { BlockLayerError } from '../../core/errors.js';
import { readL1Entry, readL2Entry, writeL2Entry } from './qcow2-format.js';
import { type Qcow2Image, readFile } from './qcow2-image.js';
import { checkOverlap } from './qcow2-overlap.js';
import { allocateNonZero } from './qcow2-refcount.js';

/** Calls `visit` with every L2 slice an L1 table points at, and its offset. */
async function forEachSlice(image: Qcow2Image, l1: Buffer, visit: (slice: Buffer, offset: number) => Promise<void>): Promise<void> {
  const sliceBytes = image.l2SliceEntries * 8;
  for (let at = 0; at < l1.length; at += 8) {
    const { offset } = readL1Entry(l1, at);
    if (offset === 0) continue;
    for (let slice = 0; slice < image.g.clusterSize; slice += sliceBytes) {
      await visit(await image.l2Cache.get(offset + slice), offset + slice);
    }
  }
}

/** Whether any L2 entry in the tables of `l1` has the zero flag. */
async function holdsZeroClusters(image: Qcow2Image, l1: Buffer): Promise<boolean> {
  let found = false;
  await forEachSlice(image, l1, async (slice) => {
    for (let at = 0; !found && at < slice.length; at += 8) {
      const kind = readL2Entry(slice, at, image.g, image.version).kind;
      found = kind === 'zero-plain' || kind === 'zero-alloc';
    }
  });
  return found;
}

export async function expandZeroClusters(image: Qcow2Image): Promise<void> {
  for (const table of image.snapshots.l1Tables) {
    const l1 = Buffer.alloc(table.size * 8);
    await readFile(image.file, table.offset, l1);
    if (await holdsZeroClusters(image, l1)) {
      throw new BlockLayerError(
        `blocklayer's qcow2 driver cannot downgrade an image whose internal snapshot '${table.name}' holds zero clusters`,
      );
    }
  }
  const cs = image.g.clusterSize;
  await forEachSlice(image, image.l1.subarray(0, image.l1Size * 8), async (slice, sliceOffset) => {
    let dirty = false;
    for (let at = 0; at < slice.length; at += 8) {
      const entry = readL2Entry(slice, at, image.g, image.version);
      if (entry.kind !== 'zero-plain' && entry.kind !== 'zero-alloc') continue;
      dirty = true;
      if (entry.kind === 'zero-plain' && image.backing === undefined) {
        slice.writeBigUInt64BE(0n, at);
        continue;
      }
      const host = entry.kind === 'zero-alloc' ? entry.host : await allocateNonZero(image, 1, 'data cluster');
      await checkOverlap(image, host, cs);
      await image.file.writeZeroes(host, cs);
      image.unflushed = true;
      writeL2Entry(slice, at, host, true, false);
    }
    if (dirty) image.l2Cache.markDirty(sliceOffset);
  });
}
