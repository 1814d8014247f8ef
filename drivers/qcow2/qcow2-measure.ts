/**
 * How large a qcow2 image would be (QEMU's qcow2_measure, qemu-img
 * measure): fully allocated, the size of qcow2_calc_prealloc_size (header,
 * every L2 and L1 entry, the refcount structure for all of it, and the
 * data); required, the same with only the source's data clusters (all of
 * them with a backing file, which may share nothing with the source);
 * persistent bitmaps, for a v3 image of a source that has them, as if every
 * bitmap cluster were allocated.
 */
import { type DriverMeasureContext, isPreallocMode, type MeasureBitmap, type MeasureResult } from '../../core/block/driver.js';
import { BlockLayerError } from '../../core/errors.js';
import { checkedClusterBits, checkedRefcountOrder } from './qcow2-create.js';
import { MAX_L1_BYTES, refcountMetadataClusters } from './qcow2-format.js';
import type { Qcow2CreateOptions } from './options.js';

/** A bitmap directory entry's fixed part (Qcow2BitmapDirEntry) and the size of a bitmap table entry. */
const BITMAP_DIR_ENTRY = 24;
const BITMAP_TABLE_ENTRY = 8;

/** 32 subclusters of at least a sector each. */
const EXTENDED_L2_MIN_CLUSTER = 32 * 512;

const roundUp = (n: number, to: number): number => Math.ceil(n / to) * to;

/** qcow2_calc_prealloc_size: the file of an image of `size` bytes with everything allocated, L2 entries `l2Entry` bytes each. */
function preallocatedSize(size: number, clusterSize: number, refcountOrder: number, l2Entry: number): number {
  const aligned = roundUp(size, clusterSize);
  const l2Entries = roundUp(aligned / clusterSize, clusterSize / l2Entry);
  const l1Entries = roundUp((l2Entries * l2Entry) / clusterSize, clusterSize / 8);
  const meta = clusterSize + l2Entries * l2Entry + l1Entries * 8;
  const refcounts = refcountMetadataClusters((meta + aligned) / clusterSize, clusterSize, refcountOrder, false);
  return meta + (refcounts.blocks + refcounts.table) * clusterSize + aligned;
}

/** Every bitmap's clusters and table, and the directory, in whole clusters. */
function bitmapsSize(bitmaps: readonly MeasureBitmap[], clusterSize: number): number {
  let size = 0;
  let directory = 0;
  for (const bitmap of bitmaps) {
    const clusters = Math.ceil(Math.ceil(Math.ceil(bitmap.size / bitmap.granularity) / 8) / clusterSize);
    size += clusters * clusterSize + roundUp(clusters * BITMAP_TABLE_ENTRY, clusterSize);
    directory += roundUp(BITMAP_DIR_ENTRY + Buffer.byteLength(bitmap.name), 8);
  }
  return size + roundUp(directory, clusterSize);
}

/** -o compat as qemu-img measure reads it: only QEMU's own names (qcow2_measure). */
function measureVersion(compat: string | undefined): 2 | 3 {
  if (compat === '0.10') return 2;
  if (compat === undefined || compat === '1.1') return 3;
  throw new BlockLayerError(`Invalid compatibility level: '${compat}'`);
}

export async function measureQcow2({ options, source }: DriverMeasureContext<Qcow2CreateOptions>): Promise<MeasureResult> {
  const clusterSize = 2 ** checkedClusterBits(options);
  const version = measureVersion(options.compat);
  const refcountOrder = checkedRefcountOrder(options, version, 'compat=1.1');
  // Extended L2 entries (two 64-bit words each) are measured though not created here.
  const l2Entry = options.extended_l2 === true ? 16 : 8;
  if (l2Entry === 16 && clusterSize < EXTENDED_L2_MIN_CLUSTER) {
    throw new BlockLayerError(`Extended L2 entries are only supported with cluster sizes of at least ${EXTENDED_L2_MIN_CLUSTER} bytes`);
  }
  const preallocation = options.preallocation ?? 'off';
  if (!isPreallocMode(preallocation)) throw new BlockLayerError(`invalid parameter value: ${preallocation}`);
  const size = roundUp(source?.length ?? options.size ?? 0, clusterSize);
  if (Math.ceil(size / clusterSize / (clusterSize / l2Entry)) * 8 > MAX_L1_BYTES) {
    throw new BlockLayerError('The image size is too large (try using a larger cluster size)');
  }
  let data = 0;
  // Preallocated data clusters are all written (falloc, full); a backing file may differ from the source anywhere.
  if (preallocation === 'falloc' || preallocation === 'full') data = size;
  else if (source !== undefined) data = options.backing_file === undefined ? await source.dataBytes(clusterSize) : size;
  const fullyAllocated = preallocatedSize(size, clusterSize, refcountOrder, l2Entry);
  const result: MeasureResult = { required: fullyAllocated - size + data, fullyAllocated };
  if (version >= 3 && source?.bitmaps !== undefined) result.bitmaps = bitmapsSize(source.bitmaps, clusterSize);
  return result;
}
