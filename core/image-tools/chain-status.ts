/**
 * Block status through a backing chain, as qemu-img map's get_block_status
 * and bdrv_block_status_above see it: a range this node allocates is decided
 * here (depth 0); an unallocated one is looked up in the backing node at
 * depth + 1, and so on. Unallocated everywhere (no backing node left, or
 * past the end of the backing node) reads as zeroes, not present, at the
 * depth where the chain ended.
 */
import type { BlockNode } from '../block/block-node.js';

/** qemu-img probes at most 1 GiB at a time. */
export const STATUS_PROBE = 2 ** 30;

export interface ChainExtent {
  offset: number;
  length: number;
  /** How many backing links down the bytes are decided (qemu-img map's depth). */
  depth: number;
  /** Some node of the chain allocates the range (BDRV_BLOCK_ALLOCATED). */
  present: boolean;
  /** Reads return zeroes. */
  zero: boolean;
  /** Reads come from stored data. */
  data: boolean;
  /** Where the data lies in `node`'s file, when stored there as is. */
  hostOffset?: number;
  /** The node at `depth`. */
  node: BlockNode;
}

/** Extents covering `[offset, offset + length)` clipped to the node's length, in order. */
export async function chainStatus(node: BlockNode, offset: number, length: number, depth = 0): Promise<ChainExtent[]> {
  const end = Math.min(offset + length, node.length);
  const out: ChainExtent[] = [];
  if (end <= offset) return out;
  for (const e of await node.blockStatus(offset, end - offset)) {
    if (e.allocated) {
      const extent: ChainExtent = { offset: e.offset, length: e.length, depth, present: true, zero: e.zero, data: e.data, node };
      if (e.hostOffset !== undefined) extent.hostOffset = e.hostOffset;
      out.push(extent);
      continue;
    }
    const backing = node.children.get('backing')?.node;
    const inBacking = backing === undefined ? 0 : Math.max(0, Math.min(e.length, backing.length - e.offset));
    if (inBacking > 0) out.push(...(await chainStatus(backing!, e.offset, inBacking, depth + 1)));
    if (inBacking < e.length) {
      out.push({ offset: e.offset + inBacking, length: e.length - inBacking, depth, present: false, zero: true, data: false, node });
    }
  }
  return out;
}

/** Walks a node's chain status forwards, fetching STATUS_PROBE at a time (qemu-img compare). */
export class ChainCursor {
  private extents: ChainExtent[] = [];
  private index = 0;

  constructor(readonly node: BlockNode) {}

  /** The extent holding `offset` (offsets must not go backwards by more than the current batch). */
  async at(offset: number): Promise<ChainExtent> {
    for (;;) {
      const extent = this.extents[this.index];
      if (extent !== undefined && offset >= extent.offset) {
        if (offset < extent.offset + extent.length) return extent;
        this.index++;
        continue;
      }
      this.extents = await chainStatus(this.node, offset, STATUS_PROBE);
      this.index = 0;
      const first = this.extents[0];
      if (first === undefined || first.offset > offset) {
        throw new Error(`no block status at offset ${offset} of node '${this.node.nodeName}'`);
      }
    }
  }
}
