/**
 * Copy-on-write into a target that names a backing file it does not have
 * open (drive-mirror's target until the job ends; QEMU's mirror_run,
 * cow_bitmap and mirror_cow_align). Writing part of one of its clusters
 * would leave the rest of that cluster reading as zeroes, where the
 * backing file linked at the end should show. So while the granularity
 * is below the target's cluster size, a copy whose first or last chunk
 * has not been copied yet is widened to whole target clusters, the
 * widened part read from the source (through the source's backing file,
 * which holds that data), and the chunks of each copy that succeeded are
 * remembered.
 */
import { skipFilters } from '../../core/block/backing-chain.js';
import type { BlockNode } from '../../core/block/block-node.js';
import type { ClaimedRange } from '../../core/copy/block-copy.js';

/** The image names a backing file but has no backing node (yet): QEMU's backing_filename[0] && !bdrv_backing_chain_next. */
export async function namesUnopenedBacking(target: BlockNode): Promise<boolean> {
  const image = skipFilters(target);
  if (image.children.has('backing')) return false;
  const description = await image.driver.describe?.(image.driverState);
  return description?.backingFilename !== undefined;
}

export class MirrorCow {
  /** Per chunk: copied by a copy that succeeded (so its target cluster is allocated). */
  private readonly copied: Uint8Array;

  private constructor(
    private readonly granularity: number,
    /** The target's cluster size, a multiple of the granularity. */
    readonly clusterSize: number,
    private readonly chunks: number,
  ) {
    this.copied = new Uint8Array(chunks);
  }

  /** The widening a job copying `chunks` chunks of `granularity` bytes into `target` needs, if any. */
  static async forTarget(target: BlockNode, granularity: number, chunks: number): Promise<MirrorCow | undefined> {
    const clusterSize = skipFilters(target).limits.clusterSize;
    if (granularity >= clusterSize || clusterSize % granularity !== 0) return undefined;
    return (await namesUnopenedBacking(target)) ? new MirrorCow(granularity, clusterSize, chunks) : undefined;
  }

  /** The chunks to copy for `op`: whole target clusters (clipped at the end) unless both its ends were copied before. */
  align(op: ClaimedRange): ClaimedRange {
    if (this.copied[op.first] === 1 && this.copied[op.end - 1] === 1) return op;
    const perCluster = this.clusterSize / this.granularity;
    const first = Math.floor(op.first / perCluster) * perCluster;
    return { first, end: Math.min(this.chunks, Math.ceil(op.end / perCluster) * perCluster) };
  }

  markCopied(range: ClaimedRange): void {
    this.copied.fill(1, range.first, range.end);
  }
}
