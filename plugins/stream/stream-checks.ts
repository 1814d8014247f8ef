/**
 * block-stream's argument rules, with QEMU 7.2's messages, in QEMU's order
 * (blockdev.c qmp_block_stream): the exclusive pairs, the device, the base
 * by file or node name, the bottom node, busy nodes from the device down to
 * the base, and a backing file name without a base. stream-starter.ts then
 * applies stream_start's rules.
 */
import { chainContains, findBackingImage, nextInChain } from '../../core/block/backing-chain.js';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import { BlockLayerError } from '../../core/errors.js';
import type { BlockStreamArgs } from './options.js';

/** What to stream: into `top`, from the images down to `base` (exclusive) or `bottom` (inclusive). */
export interface StreamPlan {
  top: BlockNode;
  base: BlockNode | undefined;
  bottom: BlockNode | undefined;
}

/** bdrv_lookup_bs(NULL, name): a node by node name only. */
export function nodeByName(graph: BlockGraph, name: string): BlockNode {
  const node = graph.node(name);
  if (node === undefined) throw new BlockLayerError(`Cannot find device='' nor node-name='${name}'`);
  return node;
}

export async function resolveStream(graph: BlockGraph, args: BlockStreamArgs): Promise<StreamPlan> {
  const { base: baseFile, 'base-node': baseNode, bottom: bottomNode } = args;
  if (baseFile !== undefined && baseNode !== undefined) {
    throw new BlockLayerError("'base' and 'base-node' cannot be specified at the same time");
  }
  if (baseFile !== undefined && bottomNode !== undefined) {
    throw new BlockLayerError("'base' and 'bottom' cannot be specified at the same time");
  }
  if (bottomNode !== undefined && baseNode !== undefined) {
    throw new BlockLayerError("'bottom' and 'base-node' cannot be specified at the same time");
  }
  const top = graph.lookup(args.device);
  let base: BlockNode | undefined;
  if (baseFile !== undefined) {
    base = await findBackingImage(top, baseFile);
    if (base === undefined) throw new BlockLayerError(`Can't find '${baseFile}' in the backing chain`);
  }
  if (baseNode !== undefined) {
    base = nodeByName(graph, baseNode);
    if (base === top || !chainContains(top, base)) {
      throw new BlockLayerError(`Node '${baseNode}' is not a backing image of '${args.device}'`);
    }
  }
  let bottom: BlockNode | undefined;
  if (bottomNode !== undefined) {
    bottom = nodeByName(graph, bottomNode);
    if (bottom.driver.kind === 'filter') {
      throw new BlockLayerError(`Node '${bottomNode}' is a filter, use a non-filter node as 'bottom'`);
    }
    if (!chainContains(top, bottom)) {
      throw new BlockLayerError(`Node '${bottomNode}' is not in a chain starting from '${args.device}'`);
    }
  }
  // Every node the job will hold, from the device down to the base (or the bottom, inclusive).
  const end = bottom !== undefined ? nextInChain(bottom) : base;
  for (let node: BlockNode | undefined = top; node !== undefined && node !== end; node = nextInChain(node)) {
    graph.checkNotBusy(node);
  }
  if (base === undefined && args['backing-file'] !== undefined) {
    throw new BlockLayerError('backing file specified, but streaming the entire chain');
  }
  return { top, base, bottom };
}
