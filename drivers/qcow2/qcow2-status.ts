/**
 * Block status (QEMU's qcow2_co_block_status): normal clusters are data at
 * a host offset, compressed ones data without one, zero clusters zeroes;
 * unallocated ranges report what the backing node reports (or zeroes),
 * marked as not allocated in this layer. On an image with preallocated
 * metadata, holes in the file under normal clusters read as zeroes too
 * (QEMU's BDRV_BLOCK_RECURSE, after qcow2_detect_metadata_preallocation).
 */
import type { BlockStatusExtent } from '../../core/block/request.js';
import { readRefcount } from './qcow2-format.js';
import { checkUsable, type Qcow2Image } from './qcow2-image.js';
import { type Extent, mapExtents } from './qcow2-read.js';
import { refblock } from './qcow2-refcount.js';

/** Clusters mapped per call (ranges without an L2 table cost one step); the node asks again for the rest. */
const MAX_STATUS_CLUSTERS = 1 << 24;

/** QEMU's heuristic: many more clusters referenced than the file has allocated means preallocated metadata. */
async function detectMetadataPreallocation(image: Qcow2Image): Promise<boolean> {
  if (image.metadataPreallocation !== undefined) return image.metadataPreallocation;
  const allocated = await image.fileAllocation();
  let found = false;
  if (allocated !== undefined) {
    const cs = image.g.clusterSize;
    const realClusters = Math.floor(allocated / cs);
    const threshold = Math.max(Math.floor((realClusters * 10) / 9), realClusters + 2);
    const { refblockEntries, refcountOrder } = image.g;
    const end = Math.ceil(image.file.length / cs);
    let referenced = 0;
    // A refcount block at a time: one lookup per block, not per cluster.
    for (let cluster = 0; cluster < end && referenced < threshold; ) {
      const index = Math.floor(cluster / refblockEntries);
      const blockEnd = Math.min(end, (index + 1) * refblockEntries);
      const block = await refblock(image, index);
      if (block === undefined) {
        cluster = blockEnd;
        continue;
      }
      for (; cluster < blockEnd && referenced < threshold; cluster++) {
        if (readRefcount(block, cluster % refblockEntries, refcountOrder) !== 0) referenced++;
      }
    }
    found = referenced >= threshold;
  }
  image.metadataPreallocation = found;
  return found;
}

async function unallocatedStatus(image: Qcow2Image, offset: number, length: number): Promise<BlockStatusExtent[]> {
  const backing = image.backing;
  const inside = backing === undefined ? 0 : Math.max(0, Math.min(length, backing.length - offset));
  const extents: BlockStatusExtent[] = [];
  if (inside > 0) {
    for (const e of await backing!.blockStatus(offset, inside)) {
      extents.push({ offset: e.offset, length: e.length, data: e.data, zero: e.zero, allocated: false });
    }
  }
  if (inside < length) extents.push({ offset: offset + inside, length: length - inside, data: false, zero: true, allocated: false });
  return extents;
}

/** Normal data whose host range may have holes in the file (preallocated metadata). */
async function preallocatedStatus(image: Qcow2Image, extent: Extent): Promise<BlockStatusExtent[]> {
  const inFile = Math.max(0, Math.min(extent.length, image.file.length - extent.host));
  const extents: BlockStatusExtent[] = [];
  if (inFile > 0) {
    for (const e of await image.file.blockStatus(extent.host, inFile)) {
      const offset = extent.offset + (e.offset - extent.host);
      extents.push({ offset, length: e.length, data: true, zero: e.zero, allocated: true, hostOffset: e.offset });
    }
  }
  if (inFile < extent.length) {
    const offset = extent.offset + inFile;
    extents.push({ offset, length: extent.length - inFile, data: true, zero: true, allocated: true, hostOffset: extent.host + inFile });
  }
  return extents;
}

/** Status of `[offset, offset + length)` from `offset` on (possibly less than asked). */
export async function statusExtents(image: Qcow2Image, offset: number, length: number): Promise<BlockStatusExtent[]> {
  checkUsable(image);
  const { extents, preallocated } = await image.lock.run(async () => ({
    preallocated: await detectMetadataPreallocation(image),
    extents: await mapExtents(image, offset, length, MAX_STATUS_CLUSTERS),
  }));
  const result: BlockStatusExtent[] = [];
  for (const e of extents) {
    switch (e.kind) {
      case 'normal':
        if (preallocated) result.push(...(await preallocatedStatus(image, e)));
        else result.push({ offset: e.offset, length: e.length, data: true, zero: false, allocated: true, hostOffset: e.host });
        break;
      case 'compressed':
        result.push({ offset: e.offset, length: e.length, data: true, zero: false, allocated: true });
        break;
      case 'unallocated':
        result.push(...(await unallocatedStatus(image, e.offset, e.length)));
        break;
      default:
        result.push({ offset: e.offset, length: e.length, data: false, zero: true, allocated: true });
    }
  }
  return result;
}
