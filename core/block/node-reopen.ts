/**
 * Reopening a node read-write or read-only (QEMU 7.2's
 * bdrv_reopen_set_read_only: a reopen queue of the node and the children
 * that inherit its options, prepared, then committed or aborted as one).
 * Jobs use it: commit and stream make a read-only base or top writable for
 * their run, an external snapshot makes the image below its overlay
 * read-only.
 *
 * - The children the node opened itself (implicit, not its backing file,
 *   not a child the driver only reads) follow it, unless `read-only` was
 *   given for them: QEMU keeps a child's explicit options on reopen.
 * - Refused as QEMU's permission check refuses it: a node that will be
 *   writable but must write to a child that stays read-only (a format node
 *   writes its file whenever it is writable; other nodes only for a writer
 *   above them): "Block node is read-only"; a node going read-only that a
 *   user outside the reopen writes to (such a parent node, or a user that
 *   says it writes: a writable export): "Read-only block node 'x' cannot
 *   support read-write users". (QEMU's reopen ignores BDRV_O_ALLOW_RDWR, so
 *   a node the user added with read-only: true may become writable too.)
 * - Order: going read-write, children before their parent (a qcow2 node
 *   writes its header through its file); going read-only, the parent
 *   first (it writes its metadata back while its file can still take it).
 *   A failure reopens the nodes already switched back, in reverse order.
 */
import { BlockLayerError } from '../errors.js';
import { BlockNode } from './block-node.js';
import type { NodeEdge } from './node-edge.js';

/** Makes `node` (and the children it opened itself) read-only or read-write; nothing if it is already. */
export async function setReadOnly(node: BlockNode, readOnly: boolean): Promise<void> {
  if (node.readOnly === readOnly) return;
  const queue = reopenQueue(node, readOnly);
  checkReopen(queue, readOnly);
  await node.drained(async () => {
    // QEMU's bdrv_reopen_prepare flushes first; a read-only node has nothing to flush.
    await node.flush({ nested: true });
    const order = readOnly ? queue : [...queue].reverse();
    const switched: BlockNode[] = [];
    try {
      for (const member of order) {
        await member.reopenReadOnly(readOnly);
        switched.push(member);
      }
    } catch (error) {
      for (const member of switched.reverse()) await member.reopenReadOnly(!readOnly).catch(() => undefined);
      throw error;
    }
  });
}

/** Whether `setReadOnly(node, readOnly)` would be refused, without reopening anything: the refusal, or undefined. */
export function reopenRefusal(node: BlockNode, readOnly: boolean): BlockLayerError | undefined {
  if (node.readOnly === readOnly) return undefined;
  try {
    checkReopen(reopenQueue(node, readOnly), readOnly);
    return undefined;
  } catch (error) {
    return error as BlockLayerError;
  }
}

/** The node, then the children that inherit its mode, parents before children. */
function reopenQueue(node: BlockNode, readOnly: boolean): BlockNode[] {
  const queue = [node];
  for (const current of queue) {
    for (const edge of current.children.values()) {
      const child = edge.node;
      const follows = child.implicit && !onlyReads(current, edge) && child.settings.readOnlyGiven !== true;
      if (follows && child.readOnly !== readOnly && !queue.includes(child)) queue.push(child);
    }
  }
  return queue;
}

function checkReopen(queue: BlockNode[], readOnly: boolean): void {
  const members = new Set(queue);
  const after = (n: BlockNode): boolean => (members.has(n) ? readOnly : n.readOnly);
  for (const member of queue) {
    if (!readOnly) {
      for (const edge of member.children.values()) {
        if (!members.has(edge.node) && edge.node.readOnly && writesTo(member, edge, after)) {
          throw new BlockLayerError('Block node is read-only');
        }
      }
    } else {
      for (const edge of member.parents) {
        if (edge.parent instanceof BlockNode && members.has(edge.parent)) continue;
        if (isWriter(edge, after)) throw new BlockLayerError(`Read-only block node '${member.nodeName}' cannot support read-write users`);
      }
    }
  }
}

/** The parent only reads this child: a backing file, or a child its driver marks read-only. */
function onlyReads(parent: BlockNode, edge: NodeEdge): boolean {
  if (edge.role === 'backing') return true;
  const spec = parent.driver.children?.find((c) => c.name === edge.role || (c.list === true && edge.role.startsWith(`${c.name}.`)));
  return spec?.readOnly === true;
}

/**
 * `parent` (read-only or not after the reopen as `after` says) writes to
 * the child behind `edge`: QEMU's default permissions, where a writable
 * format node takes WRITE on its file even without writers, and a filter
 * or raw node passes on its parents' permissions.
 */
function writesTo(parent: BlockNode, edge: NodeEdge, after: (n: BlockNode) => boolean, seen = new Set<BlockNode>()): boolean {
  if (after(parent) || onlyReads(parent, edge) || seen.has(parent)) return false;
  // raw passes its parents' permissions on, as a filter (QEMU's raw_child_perm: its file is a filtered child).
  if (parent.driver.kind === 'format' && parent.driver.name !== 'raw') return true;
  seen.add(parent);
  return [...parent.parents].some((up) => isWriter(up, after, seen));
}

function isWriter(edge: NodeEdge, after: (n: BlockNode) => boolean, seen = new Set<BlockNode>()): boolean {
  const parent = edge.parent;
  if (parent instanceof BlockNode) return writesTo(parent, edge, after, seen);
  // Backends carry no read-only mode of their own (a device on a read-only node cannot write anyway): only users that say so count.
  return parent.writes === true;
}
