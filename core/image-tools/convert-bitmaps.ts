/**
 * convert --bitmaps: the source image's persistent dirty bitmaps copied
 * into the target, as qemu-img convert does (convert_check_bitmaps before
 * anything is written, convert_copy_bitmaps after the data): each gets a
 * new persistent bitmap of the same name, granularity and recording state,
 * merged from it. The target stores them as it closes.
 */
import type { BitmapStore } from '../bitmap/bitmap-store.js';
import type { BlockNode } from '../block/block-node.js';
import { ImageToolError } from './image-access.js';
import { errorText } from '../errors.js';

/** bdrv_supports_persistent_dirty_bitmap. */
function supportsBitmaps(node: BlockNode): boolean {
  return node.driver.canStoreBitmaps?.(node.driverState) ?? false;
}

/** Before the target is made: the source can hold bitmaps, and none is inconsistent unless those are skipped. */
export function checkSourceBitmaps(store: BitmapStore, source: BlockNode, skipBroken: boolean): void {
  if (!supportsBitmaps(source)) throw new ImageToolError('Source lacks bitmap support');
  if (skipBroken) return;
  const broken = store.list(source).find((b) => b.persistent && b.inconsistent);
  if (broken !== undefined) {
    throw new ImageToolError(`Cannot copy inconsistent bitmap '${broken.name}'\nTry --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it`);
  }
}

/** Once the target is open: it can hold bitmaps. */
export function checkTargetBitmaps(target: BlockNode): void {
  if (!supportsBitmaps(target)) throw new ImageToolError(`Format driver '${target.driver.name}' does not support bitmaps`);
}

/** After the data: the copies, in the source's order; returns the warnings for skipped inconsistent bitmaps. */
export function copyBitmaps(store: BitmapStore, source: BlockNode, target: BlockNode, skipBroken: boolean): string[] {
  const warnings: string[] = [];
  for (const bitmap of store.list(source)) {
    if (!bitmap.persistent || bitmap.name === undefined) continue;
    if (bitmap.inconsistent && skipBroken) {
      warnings.push(`Skipping inconsistent bitmap '${bitmap.name}'`);
      continue;
    }
    let copy;
    try {
      copy = store.create(target, bitmap.name, { granularity: bitmap.granularity, persistent: true, enabled: bitmap.enabled });
    } catch (error) {
      throw new ImageToolError(`Failed to create bitmap ${bitmap.name}: ${errorText(error)}`);
    }
    if (copy.size !== bitmap.size) {
      throw new ImageToolError(
        `Failed to populate bitmap ${bitmap.name}: Bitmaps are of different sizes (destination size is ${copy.size}, source size is ${bitmap.size}) and can't be merged`,
      );
    }
    copy.merge(bitmap);
  }
  return warnings;
}
