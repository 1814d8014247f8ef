/**
 * QEMU's permission check for block_resize (its BlockBackend asks for
 * 'resize' on the node): a user that does not share resizing refuses it.
 * Exports never share it; a format node does not share resizing its
 * storage child ('file', 'data-file'); a node that passes its parents' view
 * through (a filter's filtered child, raw without offset or size) shares
 * what its own parents share. Backends, jobs and backing links do not
 * refuse here: jobs and backing links block the resize before (op blockers).
 */
import { BlockNode } from '../../core/block/block-node.js';
import type { NodeEdge } from '../../core/block/node-edge.js';
import { BlockLayerError } from '../../core/errors.js';

/** raw_open: without offset and size, raw is all but a filter over its file (QEMU gives the child the filtered role). */
function passesThrough(parent: BlockNode, role: string): boolean {
  if (parent.driver.kind === 'filter') return parent.driver.children?.find((c) => c.name === role)?.filtered === true;
  return parent.driver.name === 'raw' && role === 'file' && !parent.options.offset && parent.options.size === undefined;
}

/** Whether the user behind `edge` keeps others from resizing its node. */
function unsharesResize(edge: NodeEdge): boolean {
  const parent = edge.parent;
  if (parent.parentKind === 'export') return true;
  if (!(parent instanceof BlockNode)) return false;
  if (passesThrough(parent, edge.role)) return [...parent.parents].some(unsharesResize);
  return parent.driver.kind === 'format' && edge.role !== 'backing';
}

/** How QEMU's permission error names a user of a node. */
function userName(edge: NodeEdge): string {
  return edge.parent instanceof BlockNode ? `node '${edge.parent.nodeName}'` : 'an unnamed block device';
}

/** Throws QEMU's "Permission conflict" error if a user of `node` does not share resizing it. */
export function checkResizeShared(node: BlockNode): void {
  // QEMU lists a node's parents newest first.
  const edge = [...node.parents].reverse().find(unsharesResize);
  if (edge === undefined) return;
  throw new BlockLayerError(
    `Permission conflict on node '${node.nodeName}': permissions 'resize' are both required by an unnamed block ` +
      `device (uses node '${node.nodeName}' as 'root' child) and unshared by ${userName(edge)} ` +
      `(uses node '${node.nodeName}' as '${edge.role}' child).`,
  );
}
