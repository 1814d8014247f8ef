/**
 * Dirty images (incompatible bit 0: lazy refcounts were not written back
 * before a crash). Reading never needs refcounts, so a read-only open is
 * fine. A read-write open needs the refcounts rebuilt first, as QEMU does
 * on open; until a rebuild is plugged in here (qemu-img check -r all's
 * refcount rebuild), such an open is refused.
 */
import { BlockLayerError } from '../../core/errors.js';
import type { Qcow2Image } from './qcow2-image.js';

export interface DirtyImageRepair {
  /**
   * Rebuilds the refcounts of `image` from its L1/L2 tables (and whatever
   * else references clusters) and writes them; the caller then clears the
   * dirty bit. Called with the image open read-write and nothing in flight.
   */
  rebuild?: (image: Qcow2Image) => Promise<void>;
}

/** The hook the check/repair code sets. */
export const dirtyImageRepair: DirtyImageRepair = {};

/** Repairs a dirty image opened read-write, or refuses it. */
export async function repairDirtyImage(image: Qcow2Image): Promise<void> {
  const rebuild = dirtyImageRepair.rebuild;
  if (rebuild === undefined) {
    throw new BlockLayerError(
      `qcow2: Image '${image.name}' is dirty (its refcounts were not written back); ` +
        `open it read-only, or repair it first with 'qemu-img check -r all'`,
    );
  }
  await rebuild(image);
}
