/**
 * Resizing the image (QEMU's qcow2_co_truncate). Growing: a larger L1
 * table in QEMU's crash-safe order, the new size in the header, zeroes over
 * a larger backing file's data, and optionally preallocated metadata.
 * Shrinking: qcow2-shrink.ts, then the new size in the header. Images with
 * internal snapshots are refused (as QEMU).
 */
import { BlockIoError } from '../../core/errors.js';
import { HEADER_L1_OFFSET, HEADER_SIZE_OFFSET, MAX_L1_BYTES, sizeToL1, writeL2Entry } from './qcow2-format.js';
import { checkUsable, flushFile, type Qcow2Image, writeHeaderField } from './qcow2-image.js';
import { updateEntries, writableL2Table } from './qcow2-l1-l2.js';
import { writeMetadata } from './qcow2-overlap.js';
import { allocateNonZero, queueFree, writeDirtyRefblocks } from './qcow2-refcount.js';
import { shrinkImage } from './qcow2-shrink.js';
import { prepareMetadataChange, syncMetadata } from './qcow2-sync.js';
import { zeroLocked } from './qcow2-zero.js';

/**
 * Replaces the L1 table by one of `entries` entries (lock held): refcounts,
 * then the new table, then the header's l1_size and l1_table_offset (one
 * write), each flushed; the old table is freed afterwards.
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
  if (old.size > 0) queueFree(image, old.offset, old.size * 8, 'other');
}

/** Preallocates L2 tables and clusters for `[from, to)` (QEMU's preallocate_co; lock held, image unallocated there). */
export async function preallocateMetadata(image: Qcow2Image, from: number, to: number): Promise<void> {
  const { clusterSize: cs, l2Entries } = image.g;
  for (let cluster = Math.floor(from / cs); cluster * cs < to; ) {
    const count = Math.min(Math.ceil(to / cs) - cluster, l2Entries - (cluster % l2Entries));
    await writableL2Table(image, Math.floor(cluster / l2Entries));
    const host = await allocateNonZero(image, count, 'data cluster');
    const first = cluster;
    await updateEntries(image, first, count, (c, slice, at) => writeL2Entry(slice, at, host + (c - first) * cs, true, false));
    cluster += count;
  }
}

/** Grows the image to `size` bytes (lock held, no request in flight). */
export async function growImage(image: Qcow2Image, size: number): Promise<void> {
  await prepareMetadataChange(image);
  const entries = sizeToL1(BigInt(size), image.g.clusterBits);
  if (entries > BigInt(MAX_L1_BYTES / 8)) throw new BlockIoError('EFBIG', 'Failed to grow the L1 table: File too large');
  if (Number(entries) > image.l1Size) await growL1(image, Number(entries));
  await writeSize(image, size);
}

/** The header's size field (written through), and the image's. */
async function writeSize(image: Qcow2Image, size: number): Promise<void> {
  const field = Buffer.alloc(8);
  field.writeBigUInt64BE(BigInt(size));
  await writeHeaderField(image, HEADER_SIZE_OFFSET, field);
  image.size = size;
}

/** truncate: grows or shrinks the image; refuses what QEMU refuses. */
export async function resizeGuest(image: Qcow2Image, size: number): Promise<void> {
  checkUsable(image);
  if (size % 512 !== 0) throw new BlockIoError('EINVAL', 'The new size must be a multiple of 512');
  if (image.snapshots.byteSize > 0) {
    throw new BlockIoError('ENOTSUP', "Can't resize an image which has snapshots");
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
    await image.lock.run(() => growImage(image, size));
    // A backing file larger than the old size must not show through in the new area (QEMU's BDRV_REQ_ZERO_WRITE).
    const backingEnd = Math.min(size, image.backing?.length ?? 0);
    if (backingEnd > oldSize) await zeroLocked(image, oldSize, backingEnd, {});
  } finally {
    release();
  }
}
