/**
 * QEMU's op blockers for the block graph (bdrv_op_is_blocked): why a node
 * may not be taken by a job, deleted or resized. A job that holds a node
 * blocks it with its own blocker; a backing link blocks its node with one
 * worded when the link is made (QEMU's backing_blocker). The graph stamps
 * every edge it makes or re-points here (`noteEdge`), so a node reports its
 * newest blocker, as QEMU does.
 */
import { BlockLayerError } from '../errors.js';
import { BlockNode } from './block-node.js';
import type { NodeEdge } from './node-edge.js';

export class OpBlockers {
  /**
   * When each edge was made or last re-pointed, and for a backing edge the
   * op blocker it puts on its node (worded when the link is made).
   */
  private readonly edgeNotes = new WeakMap<NodeEdge, { at: number; backingBlocker?: string }>();
  private edgeCount = 0;

  /** `deviceName`: the device name of the backend on a node, or '' (the graph's). */
  constructor(private readonly deviceName: (node: BlockNode) => string) {}

  /**
   * A node a job holds (its blocker, e.g. "block device is in use by block
   * job: mirror") cannot be taken by another job: "Node 'x' is busy: …",
   * naming the node by its device name if it has one.
   */
  checkNotBusy(node: BlockNode): void {
    const blocker = blockerOf(node);
    if (blocker === undefined) return;
    const name = this.deviceName(node) || node.nodeName;
    throw new BlockLayerError(`Node '${name}' is busy: ${blocker}`);
  }

  /**
   * Why `node` may not be deleted or resized now, or undefined (QEMU's op
   * blockers for drive-del and resize): the newest blocker among the jobs
   * that hold it and the node it is the backing file of, whose blocker
   * stops both ops (jobs check the ops they need with checkNotBusy).
   */
  busyReason(node: BlockNode): string | undefined {
    let newest: { at: number; reason: string } | undefined;
    for (const edge of node.parents) {
      const note = this.edgeNotes.get(edge);
      const reason = edge.parent.blocker ?? note?.backingBlocker;
      if (reason !== undefined && (newest === undefined || (note?.at ?? 0) > newest.at)) newest = { at: note?.at ?? 0, reason };
    }
    return newest?.reason;
  }

  /** Stamps an edge made or re-pointed; a node's backing link words its blocker with the parent's name now. */
  noteEdge(edge: NodeEdge): void {
    const parent = edge.parent;
    const cow = edge.role === 'backing' && parent instanceof BlockNode && parent.driver.kind !== 'filter';
    const backingBlocker = cow ? `node is used as backing hd of '${this.deviceName(parent) || parent.nodeName}'` : undefined;
    this.edgeNotes.set(edge, { at: ++this.edgeCount, ...(backingBlocker === undefined ? {} : { backingBlocker }) });
  }
}

/** Why a user of `node` keeps other jobs off it, if one does (the first such user's blocker). */
function blockerOf(node: BlockNode): string | undefined {
  for (const edge of node.parents) if (edge.parent.blocker !== undefined) return edge.parent.blocker;
  return undefined;
}
