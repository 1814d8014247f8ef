/**
 * The argument rules of a mirror, with QEMU 7.2's messages, each where
 * QEMU checks it (blockdev.c qmp_get_root_bs and blockdev_mirror_common,
 * mirror.c mirror_start and mirror_start_job); mirror-starter.ts calls them
 * in QEMU's order.
 */
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import { BlockLayerError } from '../../core/errors.js';
import type { MirrorArgs } from './options.js';
import { MAX_IN_FLIGHT } from '../../core/copy/convergence.js';

const KiB = 1024;
const MiB = 1024 * KiB;
/** QEMU's DEFAULT_MIRROR_BUF_SIZE: 16 requests of 1 MiB in flight. */
export const DEFAULT_BUF_SIZE = 16 * MiB;
const MAX_IO_BYTES = MiB;

/** qmp_get_root_bs: the device must be a node only backends and exports use. */
export function rootNode(graph: BlockGraph, device: string): BlockNode {
  const node = graph.lookup(device);
  if (!graph.isRoot(node)) throw new BlockLayerError('Need a root block node');
  return node;
}

export function checkGranularity(granularity: number | undefined): void {
  if (granularity === undefined || granularity === 0) return;
  if (granularity < 512 || granularity > 64 * MiB) {
    throw new BlockLayerError("Parameter 'granularity' expects a value in range [512B, 64MB]");
  }
  if ((granularity & (granularity - 1)) !== 0) throw new BlockLayerError("Parameter 'granularity' expects a power of 2");
}

/** bdrv_get_default_bitmap_granularity: the target's cluster size within [4 KiB, 64 KiB], 64 KiB if it has none. */
export function defaultGranularity(target: BlockNode): number {
  const cluster = target.limits.clusterSize;
  return cluster > 0 ? Math.min(64 * KiB, Math.max(4 * KiB, cluster)) : 64 * KiB;
}

/** The node a filter passes its I/O to (bdrv_filter_bs); undefined for other nodes. */
function filteredChild(node: BlockNode): BlockNode | undefined {
  const spec = node.driver.kind === 'filter' ? node.driver.children?.find((c) => c.filtered) : undefined;
  return spec === undefined ? undefined : node.children.get(spec.name)?.node;
}

/** The node under `node`'s filters (bdrv_skip_filters). */
export function skipFilters(node: BlockNode): BlockNode {
  let current = node;
  for (let below = filteredChild(current); below !== undefined; below = filteredChild(current)) current = below;
  return current;
}

/**
 * bdrv_recurse_can_replace: replacing `toReplace` by a copy of `node`
 * cannot change what `node` shows: `toReplace` is `node`, or a driver
 * vouches for it (quorum, for a child only it uses), or it is reached
 * through filters.
 */
export function canReplace(node: BlockNode, toReplace: BlockNode): boolean {
  if (node === toReplace) return true;
  if (node.driver.recurseCanReplace !== undefined) return node.driver.recurseCanReplace(node.driverState, toReplace);
  const below = filteredChild(node);
  return below !== undefined && canReplace(below, toReplace);
}

/** check_to_replace_node and the size rule of blockdev_mirror_common. */
export function checkReplaces(graph: BlockGraph, source: BlockNode, replaces: string): BlockNode {
  const node = graph.node(replaces);
  if (node === undefined) throw new BlockLayerError(`Failed to find node with node-name='${replaces}'`);
  graph.checkNotBusy(node);
  if (!canReplace(source, node)) {
    throw new BlockLayerError(
      `Cannot replace '${replaces}' by a node mirrored from '${source.nodeName}', because it cannot be guaranteed that doing so would not lead to an abrupt change of visible data`,
    );
  }
  if (node.length !== source.length) throw new BlockLayerError('cannot replace image with a mirror image of different size');
  return node;
}

/** mirror_start: 7.2 mirrors without a bitmap only. */
export function checkSyncMode(sync: MirrorArgs['sync']): void {
  if (sync === 'incremental' || sync === 'bitmap') throw new BlockLayerError(`Sync mode '${sync}' not supported`);
}

export interface MirrorGeometry {
  granularity: number;
  /** Data in flight at most (QEMU's buf_size, rounded up to the granularity). */
  bufSize: number;
  /** Longest copy request: 1 MiB (or buf-size / 16 if larger), at most buf-size, whole granules. */
  maxOp: number;
}

/** mirror_start_job's defaults and its buf-size rule. */
export function mirrorGeometry(args: MirrorArgs, target: BlockNode): MirrorGeometry {
  const bufSizeArg = args['buf-size'] ?? 0;
  if (bufSizeArg < 0) throw new BlockLayerError("Invalid parameter 'buf-size'");
  const granularity = args.granularity !== undefined && args.granularity !== 0 ? args.granularity : defaultGranularity(target);
  const bufSize = Math.ceil((bufSizeArg === 0 ? DEFAULT_BUF_SIZE : bufSizeArg) / granularity) * granularity;
  const io = Math.min(bufSize, Math.max(bufSize / MAX_IN_FLIGHT, MAX_IO_BYTES));
  const maxOp = Math.max(granularity, Math.floor(io / granularity) * granularity);
  return { granularity, bufSize, maxOp };
}

export function checkNotSelf(source: BlockNode, target: BlockNode): void {
  if (skipFilters(source) === skipFilters(target)) throw new BlockLayerError("Can't mirror node into itself");
}

/** A target that is a filter above a node of the source's backing chain (mirror_start_job). */
export function checkTargetOutsideChain(source: BlockNode, target: BlockNode): void {
  const below = skipFilters(target);
  if (below === target) return;
  for (let node: BlockNode | undefined = source; node !== undefined; node = skipFilters(node).children.get('backing')?.node) {
    if (node === below || skipFilters(node) === below) {
      throw new BlockLayerError("Cannot mirror to a filter on top of a node in the source's backing chain");
    }
  }
}

/** The node sync=top copies above: the source's backing node (sync=top without one is full). */
export function backingOf(node: BlockNode): BlockNode | undefined {
  return skipFilters(node).children.get('backing')?.node;
}
