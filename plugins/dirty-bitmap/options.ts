/**
 * Arguments of the dirty bitmap commands and transaction actions, as QEMU
 * 7.2 declares them (member order decides which problem is reported first):
 * BlockDirtyBitmapAdd, BlockDirtyBitmap (remove, clear, enable, disable)
 * and BlockDirtyBitmapMerge.
 */
import { BlockDirtyBitmap, BlockDirtyBitmapOrStr } from '../../core/bitmap/bitmap-schema.js';
import { Qapi, type Static } from '../../core/schema/qapi.js';

export { BlockDirtyBitmap };

export const BlockDirtyBitmapAdd = Qapi.struct('BlockDirtyBitmapAdd', {
  node: Qapi.str({ description: 'the node (or device) to add the bitmap to' }),
  name: Qapi.str({ description: 'the bitmap name: unique on the node, 1 to 1023 bytes' }),
  granularity: Qapi.optional(
    Qapi.uint32({ description: 'bytes per bit: a power of 2, at least 512; default: the node’s cluster size within [4 KiB, 64 KiB], else 64 KiB' }),
  ),
  persistent: Qapi.optional(
    Qapi.bool({ description: 'store the bitmap in the image (qcow2 v3): loaded when the node opens, stored when it closes or turns read-only', default: false }),
  ),
  disabled: Qapi.optional(Qapi.bool({ description: 'create it not recording writes', default: false })),
});

export const BlockDirtyBitmapMerge = Qapi.struct('BlockDirtyBitmapMerge', {
  node: Qapi.str({ description: 'the node of the target bitmap' }),
  target: Qapi.str({ description: 'the bitmap to merge into' }),
  bitmaps: Qapi.list(BlockDirtyBitmapOrStr, {
    description: 'the bitmaps to merge: names on `node`, or {node, name} on any node of the same size',
  }),
});

export type BlockDirtyBitmapAddArgs = Static<typeof BlockDirtyBitmapAdd>;
export type BlockDirtyBitmapArgs = Static<typeof BlockDirtyBitmap>;
export type BlockDirtyBitmapMergeArgs = Static<typeof BlockDirtyBitmapMerge>;
