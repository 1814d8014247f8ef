/**
 * The argument rules of a backup that need no graph changes, with QEMU's
 * messages, in QEMU's order (blockdev.c do_backup_common, backup.c
 * backup_job_create).
 */
import type { BitmapStore } from '../../core/bitmap/bitmap-store.js';
import type { DirtyBitmap } from '../../core/bitmap/dirty-bitmap.js';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import { BlockLayerError } from '../../core/errors.js';
import type { BackupCommonArgs, BitmapSyncModeValue } from './options.js';

const BACKUP_MIN_CLUSTER = 64 * 1024;
/** Largest copy the background loop makes (QEMU's BLOCK_COPY_MAX_BUFFER). */
const BACKUP_MAX_CHUNK = 1024 * 1024;
const INT32_MAX = 2147483647;

/** The dirty bitmap a backup reads (sync=bitmap) or brings up to date (full/top), and what happens to it at the end. */
export interface SyncBitmap {
  bitmap: DirtyBitmap;
  mode: BitmapSyncModeValue;
}

/** The arguments' sync mode and bitmap once checked: incremental is sync=bitmap with bitmap-mode on-success. */
export interface SyncChoice {
  sync: Exclude<BackupCommonArgs['sync'], 'incremental'>;
  syncBitmap?: SyncBitmap;
}

/** The bitmap rules of QEMU's do_backup_common, in its order and words; the bitmap is looked up on the source node. */
export function checkBitmapArguments(args: BackupCommonArgs, source: BlockNode, bitmaps: BitmapStore): SyncChoice {
  if ((args.sync === 'incremental' || args.sync === 'bitmap') && args.bitmap === undefined) {
    throw new BlockLayerError(`must provide a valid bitmap name for '${args.sync}' sync mode`);
  }
  let mode = args['bitmap-mode'];
  if (args.sync === 'incremental' && mode !== undefined && mode !== 'on-success') {
    throw new BlockLayerError("Bitmap sync mode must be 'on-success' when using sync mode 'incremental'");
  }
  const sync = args.sync === 'incremental' ? 'bitmap' : args.sync;
  if (args.sync === 'incremental') mode = 'on-success';
  if (args.bitmap === undefined) {
    if (mode !== undefined) throw new BlockLayerError('Cannot specify bitmap sync mode without a bitmap');
    return { sync };
  }
  const bitmap = bitmaps.find(source, args.bitmap);
  if (bitmap === undefined) throw new BlockLayerError(`Bitmap '${args.bitmap}' could not be found`);
  if (mode === undefined) throw new BlockLayerError('Bitmap sync mode must be given when providing a bitmap');
  bitmap.check();
  if (sync === 'none') throw new BlockLayerError("sync mode 'none' does not produce meaningful bitmap outputs");
  if (mode === 'never' && sync !== 'bitmap') {
    throw new BlockLayerError(`Bitmap sync mode 'never' has no meaningful effect when combined with sync mode '${sync}'`);
  }
  return { sync, syncBitmap: { bitmap, mode } };
}

/** The checks backup_job_create makes before it changes the graph. */
export function checkJobArguments(args: BackupCommonArgs, source: BlockNode, target: BlockNode, graph: BlockGraph): void {
  if (source === target) throw new BlockLayerError('Source and target cannot be the same');
  if (args.compress && !target.capabilities.canCompress) {
    throw new BlockLayerError(`Compression is not supported for this drive ${graph.deviceName(target)}`);
  }
  for (const node of [source, target]) graph.checkNotBusy(node);
  const workers = args['x-perf']?.['max-workers'];
  if (workers !== undefined && (workers < 1 || workers > INT32_MAX)) {
    throw new BlockLayerError('max-workers must be between 1 and 2147483647');
  }
  const maxChunk = args['x-perf']?.['max-chunk'];
  if (maxChunk !== undefined && maxChunk < 0) {
    throw new BlockLayerError('max-chunk must be zero (which means no limit) or positive');
  }
  if (source.length !== target.length) throw new BlockLayerError('Source and target image have different sizes');
}

export interface CopyGeometry {
  clusterSize: number;
  chunk: number;
  workers: number;
}

/** Backup's cluster size is max(64 KiB, the target's cluster size); copies are at most 1 MiB or max-chunk. */
export function copyGeometry(args: BackupCommonArgs, target: BlockNode): CopyGeometry {
  const clusterSize = Math.max(BACKUP_MIN_CLUSTER, target.limits.clusterSize);
  const maxChunk = args['x-perf']?.['max-chunk'] ?? 0;
  if (maxChunk > 0 && maxChunk < clusterSize) {
    throw new BlockLayerError(`Required max-chunk (${maxChunk}) is less than backup cluster size (${clusterSize})`);
  }
  const limit = maxChunk > 0 ? Math.min(maxChunk, BACKUP_MAX_CHUNK) : BACKUP_MAX_CHUNK;
  const chunk = Math.max(clusterSize, Math.floor(limit / clusterSize) * clusterSize);
  return { clusterSize, chunk, workers: args['x-perf']?.['max-workers'] ?? 64 };
}
