/**
 * What the dirty bitmap commands and transaction actions do, each as a
 * transaction's prepare (QEMU's block_dirty_bitmap_*_prepare): checks in
 * QEMU 7.2's order with its messages, then the change, and how to undo
 * it. A command is the same prepare, committed at once.
 *
 * - add: creates the bitmap; abort deletes it.
 * - remove: marks the bitmap busy (nothing else may use it); commit
 *   deletes it, abort makes it usable again.
 * - clear, merge: change the bitmap and keep its old contents; abort puts
 *   them back (with the guest writes recorded meanwhile), commit drops them.
 * - enable, disable: abort puts the previous state back.
 */
import { inject, injectable } from 'inversify';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import { type BitmapStore, defaultBitmapGranularity, MIN_GRANULARITY } from '../../core/bitmap/bitmap-store.js';
import { CHECK_CHANGEABLE, CHECK_USABLE, type DirtyBitmap, isPowerOfTwo } from '../../core/bitmap/dirty-bitmap.js';
import { BlockLayerError } from '../../core/errors.js';
import { TOKENS } from '../../core/tokens.js';
import type { PreparedAction } from '../../core/transaction/transaction-action.js';
import type { BlockDirtyBitmapAddArgs, BlockDirtyBitmapArgs, BlockDirtyBitmapMergeArgs } from './options.js';

@injectable()
export class BitmapOperations {
  constructor(
    @inject(TOKENS.BitmapStore) private readonly store: BitmapStore,
    @inject(TOKENS.BlockGraph) private readonly graph: BlockGraph,
  ) {}

  /** qmp_block_dirty_bitmap_add. */
  add(args: BlockDirtyBitmapAddArgs): PreparedAction {
    if (args.name === '') throw new BlockLayerError('Bitmap name cannot be empty');
    const node = this.graph.lookup(args.node);
    const { granularity } = args;
    if (granularity !== undefined && (granularity < MIN_GRANULARITY || !isPowerOfTwo(granularity))) {
      throw new BlockLayerError('Granularity must be power of 2 and at least 512');
    }
    const persistent = args.persistent ?? false;
    // Before whether it can be stored, as QEMU 7.2 answers (the store checks it again).
    if (this.store.find(node, args.name) !== undefined) throw new BlockLayerError(`Bitmap already exists: ${args.name}`);
    if (persistent) this.checkStorable(node, args.name, granularity ?? defaultBitmapGranularity(node));
    const bitmap = this.store.create(node, args.name, {
      ...(granularity === undefined ? {} : { granularity }),
      enabled: !(args.disabled ?? false),
      persistent,
    });
    return { abort: () => this.store.release(bitmap) };
  }

  /**
   * do_block_dirty_bitmap_remove, as the transaction action does it:
   * detached (busy) until commit. A persistent one leaves its image at
   * once, as in QEMU; an abort keeps it in memory, so the node stores it
   * again when it closes.
   */
  async remove(args: BlockDirtyBitmapArgs): Promise<PreparedAction> {
    const bitmap = this.store.lookup(args.node, args.name);
    bitmap.check({ busy: true });
    bitmap.setBusy(true);
    await this.store.removeStored(bitmap).catch((error: unknown) => {
      bitmap.setBusy(false);
      throw error;
    });
    return {
      commit: () => {
        bitmap.setBusy(false);
        this.store.release(bitmap);
      },
      abort: () => bitmap.setBusy(false),
    };
  }

  clear(args: BlockDirtyBitmapArgs): PreparedAction {
    const bitmap = this.store.lookup(args.node, args.name);
    bitmap.check(CHECK_CHANGEABLE);
    const backup = bitmap.backup();
    bitmap.clear();
    return { abort: () => backup.restore(), clean: () => backup.release() };
  }

  enable(args: BlockDirtyBitmapArgs): PreparedAction {
    const bitmap = this.store.lookup(args.node, args.name);
    bitmap.check(CHECK_USABLE);
    const wasEnabled = bitmap.enabled;
    bitmap.enable();
    return { abort: () => (wasEnabled ? undefined : bitmap.disable()) };
  }

  disable(args: BlockDirtyBitmapArgs): PreparedAction {
    const bitmap = this.store.lookup(args.node, args.name);
    bitmap.check(CHECK_USABLE);
    const wasEnabled = bitmap.enabled;
    bitmap.disable();
    return { abort: () => (wasEnabled ? bitmap.enable() : undefined) };
  }

  /**
   * block_dirty_bitmap_merge, in the order 7.2 reports problems: for each
   * source in turn, its lookup, then the target's and the source's state,
   * then their sizes; the target changes only once every source passed.
   * An empty list merges nothing (7.2 crashes on it).
   */
  merge(args: BlockDirtyBitmapMergeArgs): PreparedAction {
    const target = this.store.lookup(args.node, args.target);
    if (args.bitmaps.length === 0) target.check(CHECK_CHANGEABLE);
    const sources: DirtyBitmap[] = [];
    for (const ref of args.bitmaps) {
      const source = typeof ref === 'string' ? this.findOn(target.node, ref) : this.store.lookup(ref.node, ref.name);
      target.check(CHECK_CHANGEABLE);
      source.check(CHECK_USABLE);
      if (source.size !== target.size) {
        throw new BlockLayerError(
          `Bitmaps are of different sizes (destination size is ${target.size}, source size is ${source.size}) and can't be merged`,
        );
      }
      sources.push(source);
    }
    const backup = target.backup();
    for (const source of sources) target.merge(source);
    return { abort: () => backup.restore(), clean: () => backup.release() };
  }

  private findOn(node: BlockNode, name: string): DirtyBitmap {
    const bitmap = this.store.find(node, name);
    if (bitmap === undefined) throw new BlockLayerError(`Dirty bitmap '${name}' not found`);
    return bitmap;
  }

  /** bdrv_can_store_new_dirty_bitmap: the node's driver stores bitmaps, and this one fits in its image. */
  private checkStorable(node: BlockNode, name: string, granularity: number): void {
    const where = this.graph.deviceName(node) || node.nodeName;
    const refusal = node.driver.bitmapStoreRefusal;
    if (refusal === undefined) throw new BlockLayerError(`Can't store persistent bitmaps to ${where}: Operation not supported`);
    const count = this.store.list(node).filter((b) => b.persistent).length;
    const reason = refusal.call(node.driver, node.driverState, name, granularity, count);
    if (reason !== undefined) throw new BlockLayerError(`Can't make bitmap '${name}' persistent in '${where}': ${reason}`);
  }
}
