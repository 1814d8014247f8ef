/**
 * block-commit's argument rules, with QEMU 7.2's messages, in QEMU's order
 * (blockdev.c qmp_block_commit): the device (a root node; DeviceNotFound
 * first, as libvirt relies on), the top image by node or file name, the
 * base by node or file name (default: the bottom-most image), busy nodes
 * from top down to base, top == base, and whether the commit is active
 * (top is the active layer, or something writes to it).
 */
import { chainContains, findBackingImage, findOverlay, nextInChain, skipFilters } from '../../core/block/backing-chain.js';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import { nodeFilename } from '../../core/block/node-info.js';
import { BlockLayerError } from '../../core/errors.js';
import type { BlockCommitArgs } from './options.js';

export interface CommitPlan {
  /** The root node (the device). */
  device: BlockNode;
  /** The topmost image committed. */
  top: BlockNode;
  /** The image committed into. */
  base: BlockNode;
  /** Active commit (mirror-like, READY, then complete); otherwise `overlay` is the image above `top`. */
  active: boolean;
  overlay: BlockNode | undefined;
}

/** bdrv_lookup_bs(NULL, name): a node by node name only. */
function nodeByName(graph: BlockGraph, name: string): BlockNode {
  const node = graph.node(name);
  if (node === undefined) throw new BlockLayerError(`Cannot find device='' nor node-name='${name}'`);
  return node;
}

/** qmp_get_root_bs, with block-commit's DeviceNotFound for an unknown name. */
function rootDevice(graph: BlockGraph, device: string): BlockNode {
  const node = graph.backend(device)?.node ?? graph.node(device);
  if (node === undefined) throw new BlockLayerError(`Device '${device}' not found`, 'DeviceNotFound');
  if (!graph.isRoot(node)) throw new BlockLayerError('Need a root block node');
  return node;
}

/** Someone writes to the node (QEMU: a parent took the WRITE permission): a device or an export. */
function hasWriter(node: BlockNode): boolean {
  return [...node.parents].some((e) => e.parent.parentKind === 'backend' || e.parent.parentKind === 'export');
}

export async function resolveCommit(graph: BlockGraph, args: BlockCommitArgs): Promise<CommitPlan> {
  const device = rootDevice(graph, args.device);
  graph.checkNotBusy(device);
  let top: BlockNode | undefined = device;
  if (args['top-node'] !== undefined && args.top !== undefined) {
    throw new BlockLayerError("'top-node' and 'top' are mutually exclusive");
  } else if (args['top-node'] !== undefined) {
    top = nodeByName(graph, args['top-node']);
    if (!chainContains(device, top)) throw new BlockLayerError(`'${args['top-node']}' is not in this backing file chain`);
  } else if (args.top !== undefined && (await nodeFilename(device)) !== args.top) {
    top = await findBackingImage(device, args.top);
  }
  if (top === undefined) throw new BlockLayerError(`Top image file ${args.top ?? 'NULL'} not found`);
  let base: BlockNode | undefined;
  if (args['base-node'] !== undefined && args.base !== undefined) {
    throw new BlockLayerError("'base-node' and 'base' are mutually exclusive");
  } else if (args['base-node'] !== undefined) {
    base = nodeByName(graph, args['base-node']);
    if (!chainContains(top, base)) throw new BlockLayerError(`'${args['base-node']}' is not in this backing file chain`);
  } else if (args.base !== undefined) {
    base = await findBackingImage(top, args.base);
    if (base === undefined) throw new BlockLayerError(`Can't find '${args.base}' in the backing chain`);
  } else {
    base = findOverlay(top, undefined);
    if (base === undefined) throw new BlockLayerError('There is no backimg image');
  }
  const end = nextInChain(base);
  for (let node: BlockNode | undefined = top; node !== undefined && node !== end; node = nextInChain(node)) graph.checkNotBusy(node);
  if (top === base) throw new BlockLayerError('cannot commit an image into itself');
  const isActiveLayer = skipFilters(top) === skipFilters(device);
  if (isActiveLayer || hasWriter(top)) {
    if (args['backing-file'] !== undefined) {
      throw new BlockLayerError(
        isActiveLayer ? "'backing-file' specified, but 'top' is the active layer" : "'backing-file' specified, but 'top' has a writer on it",
      );
    }
    return { device, top, base, active: true, overlay: undefined };
  }
  const overlay = findOverlay(device, top)!;
  graph.checkNotBusy(overlay);
  return { device, top, base, active: false, overlay };
}
