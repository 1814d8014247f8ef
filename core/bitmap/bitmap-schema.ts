/**
 * QAPI types of dirty bitmaps that more than one plugin speaks: a bitmap
 * named by node and name (BlockDirtyBitmap), one named either that way or
 * by its name alone (BlockDirtyBitmapOrStr: merge's sources, an export's
 * bitmaps), and a bitmap as query-named-block-nodes describes it
 * (BlockDirtyInfo, members in QEMU's order).
 */
import { Qapi, type Static } from '../schema/qapi.js';

export const BlockDirtyBitmap = Qapi.struct('BlockDirtyBitmap', {
  node: Qapi.str({ description: 'the node (or device) the bitmap belongs to' }),
  name: Qapi.str({ description: 'the bitmap name' }),
});

export const BlockDirtyBitmapOrStr = Qapi.alternate('BlockDirtyBitmapOrStr', [Qapi.str(), BlockDirtyBitmap]);

export const BlockDirtyInfo = Qapi.struct('BlockDirtyInfo', {
  name: Qapi.optional(Qapi.str()),
  count: Qapi.int(),
  granularity: Qapi.uint32(),
  recording: Qapi.bool(),
  busy: Qapi.bool(),
  persistent: Qapi.bool(),
  inconsistent: Qapi.optional(Qapi.bool()),
});

export type BlockDirtyBitmapValue = Static<typeof BlockDirtyBitmap>;
export type BlockDirtyBitmapOrStrValue = Static<typeof BlockDirtyBitmapOrStr>;
export type BlockDirtyInfoValue = Static<typeof BlockDirtyInfo>;
