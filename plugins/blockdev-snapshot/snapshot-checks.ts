/**
 * QEMU 7.2's checks for an external snapshot (blockdev.c,
 * external_snapshot_prepare), in its order and words: finding the node,
 * its op blockers, and what the overlay must be.
 */
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import type { NodeEdge } from '../../core/block/node-edge.js';
import { BlockLayerError } from '../../core/errors.js';

/**
 * bdrv_lookup_bs: `device` names a backend only, `nodeName` a node; the
 * message names both as given ('' for one left out).
 */
export function lookupNode(graph: BlockGraph, device: string | undefined, nodeName: string | undefined): BlockNode {
  const node = (device === undefined ? undefined : graph.backend(device)?.node) ?? (nodeName === undefined ? undefined : graph.node(nodeName));
  if (node === undefined) throw new BlockLayerError(`Cannot find device='${device ?? ''}' nor node-name='${nodeName ?? ''}'`);
  return node;
}

/** bdrv_lookup_bs(name, name, NULL) succeeds: the name is taken by a backend or a node. */
export function nameTaken(graph: BlockGraph, name: string): boolean {
  return graph.backend(name) !== undefined || graph.node(name) !== undefined;
}

/**
 * The op blockers of BLOCK_OP_TYPE_EXTERNAL_SNAPSHOT: a job holding the
 * node, or an image it is the backing file of (e.g. an earlier overlay).
 */
export function checkSnapshotAllowed(graph: BlockGraph, node: BlockNode): void {
  const reason = graph.busyReason(node);
  if (reason !== undefined) throw new BlockLayerError(`Node '${graph.deviceName(node) || node.nodeName}' is busy: ${reason}`);
}

/** What the overlay must be before it is linked above the node, in QEMU's order. */
export function checkOverlay(overlay: BlockNode): void {
  if (readByAUser(overlay)) throw new BlockLayerError('The overlay is already in use');
  if (overlay.driver.kind === 'filter') throw new BlockLayerError('Filters cannot be used as overlays');
  if (overlay.children.has('backing')) throw new BlockLayerError('The overlay already has a backing image');
  if (!(overlay.driver.children ?? []).some((c) => c.name === 'backing') || overlay.driver.linkBacking === undefined) {
    throw new BlockLayerError('The overlay does not support backing images');
  }
}

/**
 * QEMU refuses an overlay some user already reads as a valid image (the
 * consistent-read permission): an export, a device, a job's source, or a
 * node such a user reads through. A job's target and the job's own
 * nameless writer on it (a mirror target) only write, so they do not count.
 */
function readByAUser(node: BlockNode, seen = new Set<BlockNode>()): boolean {
  if (seen.has(node)) return false;
  seen.add(node);
  return [...node.parents].some((edge) => reads(edge, seen));
}

function reads(edge: NodeEdge, seen: Set<BlockNode>): boolean {
  const { parent } = edge;
  switch (parent.parentKind) {
    case 'node':
      return readByAUser(parent as BlockNode, seen);
    case 'job':
      return edge.role !== 'target';
    case 'backend':
      return parent.parentName !== '';
    default:
      return true;
  }
}
