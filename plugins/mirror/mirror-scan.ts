/**
 * The mirror's first pass (QEMU's mirror_dirty_init): what must be copied
 * before the target is in sync. sync=full marks what is allocated anywhere
 * in the source's backing chain, sync=top what the source's top layer
 * allocates, sync=none nothing. A target that must be zero-initialised
 * (blockdev-mirror and existing images with sync=full) is zeroed first if
 * it can do so by deallocating, and otherwise every cluster is marked. The
 * scan pauses between steps; its requests are the job's, nested, so a
 * drain waits for the job to park rather than holding them.
 */
import type { NodeChild } from '../../core/block/node-edge.js';
import { CopyError } from '../../core/copy/block-copy.js';
import { toBlockIoError } from '../../core/errors.js';
import type { Job } from '../../core/job/job.js';
import { skipFilters } from './mirror-checks.js';
import type { MirrorState } from './mirror-state.js';

/** Bytes asked about (or zeroed) per step. */
const STEP = 2 ** 30;

export interface ScanSettings {
  sync: 'full' | 'top' | 'none';
  zeroTarget: boolean;
}

export async function scanSource(job: Job, state: MirrorState, source: NodeChild, target: NodeChild, settings: ScanSettings): Promise<void> {
  const { bitmap } = state;
  if (settings.zeroTarget) {
    const node = target.node;
    if (!node.capabilities.canZero || node.settings.discard !== 'unmap') {
      bitmap.fill();
      return;
    }
    for (let offset = 0; offset < bitmap.length; offset += STEP) {
      await job.pausePoint();
      const bytes = Math.min(STEP, bitmap.length - offset);
      await target.writeZeroes(offset, bytes, { mayUnmap: true }).catch((error: unknown) => {
        state.markDirty(offset, bytes);
        state.fail(new CopyError('write', toBlockIoError(error)));
      });
    }
  }
  if (settings.sync === 'none') return;
  for (let offset = 0; offset < bitmap.length; offset += STEP) {
    await job.pausePoint();
    const bytes = Math.min(STEP, bitmap.length - offset);
    for (const extent of await allocated(source, offset, bytes, settings.sync === 'full')) {
      state.markDirty(extent.offset, extent.length);
    }
  }
}

/** The ranges of `[offset, offset + length)` allocated in `child`'s node, or anywhere in its backing chain. */
async function allocated(child: NodeChild, offset: number, length: number, wholeChain: boolean): Promise<{ offset: number; length: number }[]> {
  const out: { offset: number; length: number }[] = [];
  const extents = await child.blockStatus(offset, length).catch((error: unknown) => {
    throw toBlockIoError(error);
  });
  for (const extent of extents) {
    if (extent.allocated) {
      out.push(extent);
      continue;
    }
    const backing = wholeChain ? skipFilters(child.node).children.get('backing') : undefined;
    const inside = backing === undefined ? 0 : Math.max(0, Math.min(extent.length, backing.length - extent.offset));
    if (inside > 0) out.push(...(await allocated(backing!, extent.offset, inside, true)));
  }
  return out;
}
