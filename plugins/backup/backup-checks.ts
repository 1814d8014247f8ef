/**
 * The argument rules of a backup that need no graph changes, with QEMU's
 * messages, in QEMU's order (blockdev.c do_backup_common, backup.c
 * backup_job_create).
 */
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import { BlockLayerError } from '../../core/errors.js';
import type { BackupCommonArgs } from './options.js';

const BACKUP_MIN_CLUSTER = 64 * 1024;
/** Largest copy the background loop makes (QEMU's BLOCK_COPY_MAX_BUFFER). */
const BACKUP_MAX_CHUNK = 1024 * 1024;
const INT32_MAX = 2147483647;

/**
 * Bitmap rules. No plugin of this layer keeps dirty bitmaps, so a named
 * bitmap is never found; the rules that apply without one are QEMU's.
 */
export function checkBitmapArguments(args: BackupCommonArgs): void {
  if ((args.sync === 'incremental' || args.sync === 'bitmap') && args.bitmap === undefined) {
    throw new BlockLayerError(`must provide a valid bitmap name for '${args.sync}' sync mode`);
  }
  if (args.sync === 'incremental' && args['bitmap-mode'] !== undefined && args['bitmap-mode'] !== 'on-success') {
    throw new BlockLayerError("Bitmap sync mode must be 'on-success' when using sync mode 'incremental'");
  }
  if (args.bitmap !== undefined) throw new BlockLayerError(`Bitmap '${args.bitmap}' could not be found`);
  if (args['bitmap-mode'] !== undefined) throw new BlockLayerError('Cannot specify bitmap sync mode without a bitmap');
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
