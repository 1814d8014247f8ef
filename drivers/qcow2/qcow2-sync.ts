/**
 * Writing cached metadata back in dependency order, so that a crash at any
 * point leaves at worst leaked clusters (reference §3.6):
 *
 *   1. refcount blocks (increments only) → flush
 *   2. L2 slices (they point at clusters whose refcounts and data are now on disk) → flush
 *   3. L1 entries (they point at L2 tables now on disk) → flush
 *   4. the refcount decrements queued before 1., whose pointers are gone
 *      from the disk now; only then may those clusters be reused.
 *
 * Also the first-write preparations: autoclear bits not maintained are cleared,
 * and with lazy refcounts the dirty bit is set before the first metadata
 * change and cleared when the image is closed cleanly. With the lock held.
 */
import { BlockIoError } from '../../core/errors.js';
import { HEADER_AUTOCLEAR_OFFSET, INCOMPAT_DIRTY } from './qcow2-format.js';
import { checkUsable, flushFile, type Qcow2Image, trimFile, writeHeaderField, writeIncompatible } from './qcow2-image.js';
import { writeDirtyL1 } from './qcow2-l1-l2.js';
import { writeMetadata } from './qcow2-overlap.js';
import { applyFrees, writeDirtyRefblocks } from './qcow2-refcount.js';

/** Frees queued beyond this are made durable (and reusable) without waiting for a guest flush. */
const MAX_PENDING_FREES = 4096;

/** The L2 cache's eviction of a dirty slice: what it points to goes first (unless refcounts are lazy). */
export async function writeBackL2Slice(image: Qcow2Image, offset: number, slice: Buffer): Promise<void> {
  if (!image.lazyRefcounts) await writeDirtyRefblocks(image);
  if (image.unflushed) await flushFile(image);
  await writeMetadata(image, offset, slice, 'active L2 table');
}

async function writeDirtyL2(image: Qcow2Image): Promise<void> {
  for (const [offset, slice] of image.l2Cache.dirty()) {
    await writeMetadata(image, offset, slice, 'active L2 table');
    image.l2Cache.markClean(offset);
  }
}

/** Writes all cached metadata in dependency order and applies the frees this makes safe. */
export async function syncMetadata(image: Qcow2Image): Promise<void> {
  checkUsable(image);
  const frees = image.pendingFrees.splice(0);
  await writeDirtyRefblocks(image);
  if (image.l2Cache.hasDirty) {
    if (image.unflushed) await flushFile(image);
    await writeDirtyL2(image);
  }
  if (image.l1Dirty !== undefined) {
    if (image.unflushed) await flushFile(image);
    await writeDirtyL1(image);
  }
  if (frees.length > 0) {
    if (image.unflushed) await flushFile(image);
    await applyFrees(image, frees);
    await writeDirtyRefblocks(image);
  }
}

/** Whether so many frees wait that they should be made durable now (syncIfFreesPile). */
export function freesPiled(image: Qcow2Image): boolean {
  return image.pendingFrees.length >= MAX_PENDING_FREES;
}

/** Syncs early when many frees wait, so freed space is reused without a guest flush. */
export async function syncIfFreesPile(image: Qcow2Image): Promise<void> {
  if (freesPiled(image)) await syncMetadata(image);
}

/**
 * Before the first change to the image: the autoclear bits this driver
 * does not maintain go. That is all of them, but bit 0 while the image's
 * bitmaps are loaded and marked in use (qcow2-bitmaps.ts).
 */
export async function prepareForWrite(image: Qcow2Image): Promise<void> {
  checkUsable(image);
  if (!image.writable) throw new BlockIoError('EACCES', `qcow2: image '${image.name}' is read-only`);
  if (image.preparedForWrite) return;
  const kept = image.bitmapsInUse ? image.autoclear & 1n : 0n;
  if (image.autoclear !== kept) {
    const field = Buffer.alloc(8);
    field.writeBigUInt64BE(kept);
    await writeHeaderField(image, HEADER_AUTOCLEAR_OFFSET, field);
    image.autoclear = kept;
    // Bitmaps not loaded are dropped: QEMU ignores them from now on, their clusters leak (case 24).
    if ((kept & 1n) === 0n) image.bitmapDirectory = undefined;
  }
  image.preparedForWrite = true;
}

/** Before metadata changes: with lazy refcounts, the image is marked dirty first. */
export async function prepareMetadataChange(image: Qcow2Image): Promise<void> {
  await prepareForWrite(image);
  if (image.lazyRefcounts && (image.incompatible & INCOMPAT_DIRTY) === 0n) {
    await writeIncompatible(image, image.incompatible | INCOMPAT_DIRTY);
  }
}

/** Runs `body` with the whole image to itself (no guest request in flight or let in) and the metadata lock. */
export async function withWholeImage<T>(image: Qcow2Image, body: () => Promise<T>): Promise<T> {
  checkUsable(image);
  const release = await image.ranges.acquire(0, Infinity, true);
  try {
    return await image.lock.run(body);
  } finally {
    release();
  }
}

/** A clean close: everything on disk, then the dirty bit cleared. */
export async function closeImage(image: Qcow2Image): Promise<void> {
  if (image.cleanTimer !== undefined) clearInterval(image.cleanTimer);
  if (!image.writable) return;
  // Marked corrupt: nothing cached is written; only the slack growFile added, which holds nothing, is cut.
  if (image.failure !== undefined) {
    await trimFile(image).catch(() => undefined);
    return;
  }
  await image.lock.run(() => settleImage(image));
}

/**
 * The end of writing (close, reopen read-only): cached metadata on disk,
 * the file's slack cut, flushed, and the dirty bit lazy refcounts set
 * cleared (QEMU's qcow2_inactivate / qcow2_mark_clean). With the lock held.
 */
export async function settleImage(image: Qcow2Image): Promise<void> {
  await syncMetadata(image);
  await trimFile(image);
  if (image.unflushed) await flushFile(image);
  if (image.lazyRefcounts && !image.keepDirty && (image.incompatible & INCOMPAT_DIRTY) !== 0n) {
    await writeIncompatible(image, image.incompatible & ~INCOMPAT_DIRTY);
  }
}
