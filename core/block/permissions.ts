/**
 * What a node's users need of it, as QEMU's permissions (BLK_PERM_*): the
 * permissions they take and the ones they let other users have. The file
 * driver turns them into image locks that other processes (QEMU's among
 * them) see. The model is QEMU's default one, coarser:
 *
 * - A node is in use when a user outside the graph holds it (a device, a
 *   job, an export, an image tool's open), or a parent node keeps its own
 *   data in it (a format's file, a backing file). A parent that only
 *   passes its parents' requests on (a filter, raw over its file) makes
 *   its child in use exactly when it is itself. A node that nothing uses
 *   takes nothing: a raw image added with blockdev-add is not locked until
 *   a user comes, as in QEMU.
 * - A node in use takes consistent read, and write and resize while it is
 *   writable; it shares consistent read and write unchanged only (QEMU's
 *   format nodes on their file, and qemu-img's opens), or everything with
 *   force-share.
 */
import type { BlockNode } from './block-node.js';

/** QEMU's permissions, in the order of their bits, named as its messages name them. */
export const PERMISSIONS = ['consistent read', 'write', 'write unchanged', 'resize'] as const;

export type Permission = (typeof PERMISSIONS)[number];

export interface NodePermissions {
  /** What the node's users take. */
  readonly taken: readonly Permission[];
  /** What they let others take. */
  readonly shared: readonly Permission[];
}

/** A node nobody uses: it takes nothing and shares everything. */
export const UNUSED: NodePermissions = { taken: [], shared: PERMISSIONS };

/** What a user takes of a node in use, writable or not, sharing everything with force-share. */
export function userPermissions(readOnly: boolean, forceShare: boolean): NodePermissions {
  return {
    taken: readOnly ? ['consistent read'] : ['consistent read', 'write', 'resize'],
    shared: forceShare ? PERMISSIONS : ['consistent read', 'write unchanged'],
  };
}

/** Whether `node` is in use (see the header); `heldForUse`: an internal open's root, used by whoever opened it. */
export function inUse(node: BlockNode): boolean {
  if (node.heldForUse) return true;
  for (const edge of node.parents) {
    const parent = edge.parent;
    if (!isNode(parent)) return true;
    if (!passesPermissions(parent, edge.role) || inUse(parent)) return true;
  }
  return false;
}

/** What `node`'s users need of it, now or once it is in mode `readOnly`. */
export function nodePermissions(node: BlockNode, readOnly = node.readOnly): NodePermissions {
  return inUse(node) ? userPermissions(readOnly, node.settings.forceShare) : UNUSED;
}

/**
 * `node.refreshPermissions()` where a refusal cannot stop what happened: a
 * user went away (giving permissions back, which no lock refuses), or
 * users moved to another node (a job's completion); a node that could not
 * take more keeps what it held.
 */
export function refreshPermissionsAfter(node: BlockNode): void {
  try {
    node.refreshPermissions();
  } catch {
    // Kept as it was; see above.
  }
}

export function samePermissions(a: NodePermissions, b: NodePermissions): boolean {
  const same = (x: readonly Permission[], y: readonly Permission[]) => x.length === y.length && x.every((p) => y.includes(p));
  return same(a.taken, b.taken) && same(a.shared, b.shared);
}

function isNode(parent: unknown): parent is BlockNode {
  return (parent as { parentKind?: string }).parentKind === 'node';
}

/** The child `role` of `parent` passes its parents' permissions on (a filter's child, raw's file). */
function passesPermissions(parent: BlockNode, role: string): boolean {
  const name = role.replace(/\.\d+$/, '');
  const spec = parent.driver.children?.find((child) => child.name === name);
  return spec !== undefined && (spec.filtered === true || spec.passesPermissions === true);
}
