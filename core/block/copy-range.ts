/**
 * Copy offloading (QEMU's bdrv_co_copy_range, behind qemu-img convert -C):
 * bytes go from one node to another without passing through a buffer here.
 * The request first travels down the source's graph (each driver's
 * `copyRangeFrom` maps it to where the bytes lie: raw adds its offset,
 * qcow2 finds the clusters), then, at the protocol node holding them, turns
 * to the destination and travels down its graph (`copyRangeTo`: qcow2
 * allocates the clusters), until the destination's protocol node copies
 * from the source's (the file driver: copy_file_range between the two
 * files). What the source finds zero is written as zeroes to the
 * destination instead. Any driver on the way that cannot take part fails
 * the request with ENOTSUP, and the caller copies through a buffer instead,
 * as qemu-img does.
 *
 * The source side is a tracked read of each node it passes, the
 * destination side a tracked write (through the beforeWrite and afterWrite
 * hooks, without a buffer). Requests are not split at `maxTransfer`, and
 * must be aligned to both nodes' request alignment (else ENOTSUP).
 */
import type { BlockNode } from './block-node.js';
import type { NodeChild } from './node-edge.js';

/** One end of a copy: the node, where in it, and whether a parent node's request reached it (RequestOptions' nested). */
export interface CopyEnd {
  readonly node: BlockNode;
  readonly offset: number;
  readonly nested: boolean;
}

/** `length` bytes from `from` to `to`; each driver on the way sees the end it is on as its node's. */
export interface CopyRange {
  readonly from: CopyEnd;
  readonly to: CopyEnd;
  readonly length: number;
}

/** The part of `range` that starts `at` bytes into it and is `length` long. */
export function subRange(range: CopyRange, at: number, length: number): CopyRange {
  return {
    from: { ...range.from, offset: range.from.offset + at },
    to: { ...range.to, offset: range.to.offset + at },
    length,
  };
}

/** The source reads as zeroes in this part of `range`: the destination is zeroed there (QEMU's BDRV_REQ_ZERO_WRITE). */
export function zeroDestination(range: CopyRange): Promise<void> {
  const { to } = range;
  return to.node.writeZeroes(to.offset, range.length, {}, { nested: to.nested });
}

/** As copyRange, between two children (a job's source and target edges). */
export function copyBetween(from: NodeChild, fromOffset: number, to: NodeChild, toOffset: number, length: number): Promise<void> {
  return from.copyRangeFrom(fromOffset, { from: from.copyEnd(fromOffset), to: to.copyEnd(toOffset), length });
}

/**
 * Copies `length` bytes at `fromOffset` of `from` to `toOffset` of `to`
 * (neither reached through a parent node). Rejects with ENOTSUP where the
 * graphs cannot offload the copy; some of it may have been copied then.
 */
export function copyRange(from: BlockNode, fromOffset: number, to: BlockNode, toOffset: number, length: number): Promise<void> {
  return from.copyRangeFrom({ from: { node: from, offset: fromOffset, nested: false }, to: { node: to, offset: toOffset, nested: false }, length });
}
