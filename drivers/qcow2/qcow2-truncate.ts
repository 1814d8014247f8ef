/**
 * Resizing the image (QEMU's qcow2_co_truncate). Growing: a larger L1
 * table in QEMU's crash-safe order, the new size in the header, zeroes over
 * a larger backing file's data, and optionally preallocated metadata.
 * Shrinking: qcow2-shrink.ts, then the new size in the header. v2 images
 * with internal snapshots are refused (as QEMU).
 */
import type { PreallocMode } from '../../core/block/driver.js';
import { BlockIoError } from '../../core/errors.js';
import { HEADER_L1_OFFSET, HEADER_SIZE_OFFSET, MAX_L1_BYTES, sizeToL1 } from './qcow2-format.js';
import { checkUsable, flushFile, type Qcow2Image, writeHeaderField } from './qcow2-image.js';
import { writeMetadata } from './qcow2-overlap.js';
import { preallocate } from './qcow2-preallocate.js';
import { allocateNonZero, applyFrees, writeDirtyRefblocks } from './qcow2-refcount.js';
import { shrinkImage } from './qcow2-shrink.js';
import { prepareMetadataChange, syncMetadata } from './qcow2-sync.js';
import { zeroLocked } from './qcow2-zero.js';

/**
 * Replaces the L1 table by one of `entries` entries (lock held): refcounts,
 * then the new table, then the header's l1_size and l1_table_offset (one
 * write), each flushed; then the old table is freed.
 */
export async function growL1(image: Qcow2Image, entries: number): Promise<void> {
  // The old table's in-memory entries may point at tables not yet on disk.
  await syncMetadata(image);
  const bytes = entries * 8;
  const offset = await allocateNonZero(image, Math.ceil(bytes / image.g.clusterSize), 'L1 table', bytes);
  await writeDirtyRefblocks(image);
  await flushFile(image);
  const table = Buffer.alloc(bytes);
  image.l1.copy(table);
  await writeMetadata(image, offset, table);
  await flushFile(image);
  const pointer = Buffer.alloc(12);
  pointer.writeUInt32BE(entries, 0);
  pointer.writeBigUInt64BE(BigInt(offset), 4);
  await writeHeaderField(image, HEADER_L1_OFFSET, pointer);
  const old = { offset: image.l1Offset, size: image.l1Size };
  image.l1 = table;
  image.l1Offset = offset;
  image.l1Size = entries;
  // The header no longer points at the old table (flushed above): freed at once, as QEMU's qcow2_grow_l1_table does.
  if (old.size > 0) {
    const cs = image.g.clusterSize;
    await applyFrees(image, [{ first: old.offset / cs, last: Math.floor((old.offset + old.size * 8 - 1) / cs), type: 'other' }]);
  }
}

/**
 * Grows the image to `size` bytes (lock held, no request in flight): the L1
 * table first, then the preallocation asked for, then the size in the
 * header (QEMU's qcow2_co_truncate).
 */
export async function growImage(image: Qcow2Image, size: number, preallocation: PreallocMode = 'off'): Promise<void> {
  await prepareMetadataChange(image);
  const entries = sizeToL1(BigInt(size), image.g.clusterBits);
  if (entries > BigInt(MAX_L1_BYTES / 8)) throw new BlockIoError('EFBIG', 'Failed to grow the L1 table: File too large');
  if (Number(entries) > image.l1Size) await growL1(image, Number(entries));
  if (preallocation !== 'off') await preallocate(image, image.size, size, preallocation);
  await writeSize(image, size);
}

/** The header's size field (written through), and the image's. */
async function writeSize(image: Qcow2Image, size: number): Promise<void> {
  const field = Buffer.alloc(8);
  field.writeBigUInt64BE(BigInt(size));
  await writeHeaderField(image, HEADER_SIZE_OFFSET, field);
  image.size = size;
}

/** truncate: grows (allocated as `preallocation` says) or shrinks the image; refuses what QEMU refuses. */
export async function resizeGuest(image: Qcow2Image, size: number, preallocation: PreallocMode = 'off'): Promise<void> {
  checkUsable(image);
  if (size % 512 !== 0) throw new BlockIoError('EINVAL', 'The new size must be a multiple of 512');
  // v3 snapshots record their own disk size; v2 ones take the image's.
  if (image.snapshots.entries.length > 0 && image.version < 3) {
    throw new BlockIoError('ENOTSUP', "Can't resize a v2 image which has snapshots");
  }
  if (size === image.size) return;
  const release = await image.ranges.acquire(0, Infinity, true);
  try {
    if (size < image.size) {
      await shrinkImage(image, size);
      await image.lock.run(() => writeSize(image, size));
      return;
    }
    const oldSize = image.size;
    await image.lock.run(() => growImage(image, size, preallocation));
    // A backing file larger than the old size must not show through in the new area (QEMU's BDRV_REQ_ZERO_WRITE),
    // unless the new clusters are data the file itself zeroed (falloc, full).
    const backingEnd = Math.min(size, image.backing?.length ?? 0);
    const fileZeroed = preallocation === 'falloc' || preallocation === 'full';
    if (backingEnd > oldSize && !fileZeroed) await zeroLocked(image, oldSize, backingEnd, {});
  } finally {
    release();
  }
}
