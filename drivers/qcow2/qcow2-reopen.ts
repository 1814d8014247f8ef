/**
 * Reopening an open image in the other mode, as its open and close would
 * leave it (QEMU's qcow2_reopen_prepare/commit):
 *
 * - read-only: the cached metadata is written back in crash-safe order,
 *   the slack the file grew ahead of need is cut, everything is flushed,
 *   and the dirty bit lazy refcounts set is cleared (qcow2_mark_clean); no
 *   later request may change the image.
 * - read-write: what a read-write open checks — a corrupt image is
 *   refused with the open's message, a dirty one (left by a crash with lazy
 *   refcounts, and opened read-only since) has its refcounts repaired and
 *   the bit cleared (QEMU 7.2 only does this on open; doing it here too
 *   keeps the image's refcounts trustworthy for the writes to come) — then
 *   the file grows ahead of need again.
 *
 * The core calls this with the node drained and flushed, the file child
 * already writable when going read-write and still writable when going
 * read-only. On failure the image stays in its old mode.
 */
import type { DriverReopen } from '../../core/block/driver.js';
import { BlockLayerError } from '../../core/errors.js';
import { repairDirtyRefcounts } from './qcow2-check.js';
import { INCOMPAT_CORRUPT, INCOMPAT_DIRTY } from './qcow2-format.js';
import { type Qcow2Image, writeIncompatible } from './qcow2-image.js';
import { settleImage } from './qcow2-sync.js';

export async function reopenImage(image: Qcow2Image, { readOnly }: DriverReopen): Promise<void> {
  if (image.writable === !readOnly) return;
  await image.lock.run(async () => {
    if (readOnly) {
      // An image marked corrupt while open refuses every request; there is nothing it may still write.
      if (image.failure === undefined) await settleImage(image);
      delete image.growAhead;
      delete image.freshFrom;
      image.writable = false;
      return;
    }
    if ((image.incompatible & INCOMPAT_CORRUPT) !== 0n) {
      throw new BlockLayerError('qcow2: Image is corrupt; cannot be opened read/write');
    }
    image.writable = true;
    image.growAhead = { end: image.file.length };
    try {
      if ((image.incompatible & INCOMPAT_DIRTY) !== 0n && !image.keepDirty) {
        await repairDirtyRefcounts(image);
        await writeIncompatible(image, image.incompatible & ~INCOMPAT_DIRTY);
      }
    } catch (error) {
      image.writable = false;
      delete image.growAhead;
      throw error;
    }
  });
}
