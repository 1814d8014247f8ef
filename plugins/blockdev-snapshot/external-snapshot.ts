/**
 * The external snapshot both actions take (QEMU 7.2's
 * external_snapshot_prepare/commit/abort/clean): with the node drained,
 * link the overlay's backing to it and move every user of the node (its
 * devices, exports, parent nodes) onto the overlay. Commit reopens the old
 * node read-only (core/block/node-reopen.ts: its file descriptor too); abort
 * puts every user back and unlinks the overlay.
 */
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import { setReadOnly } from '../../core/block/node-reopen.js';
import { BlockLayerError } from '../../core/errors.js';
import type { PreparedAction, TransactionContext } from '../../core/transaction/transaction-action.js';
import { checkOverlay, checkSnapshotAllowed } from './snapshot-checks.js';

export interface OverlaySource {
  /** Opens (or finds) the overlay once the node passed its checks; may fail. */
  open(old: BlockNode): Promise<BlockNode>;
  /** After commit or abort: drops an overlay nobody uses, as QEMU's last reference goes. */
  release(overlay: BlockNode): Promise<void> | void;
}

export async function prepareExternalSnapshot(
  graph: BlockGraph,
  context: TransactionContext,
  findOld: () => BlockNode,
  source: OverlaySource,
): Promise<PreparedAction> {
  const old = findOld();
  await context.drain(old);
  let overlay: BlockNode | undefined;
  let appended = false;
  const undo = async (): Promise<void> => {
    if (overlay === undefined || !appended) return;
    // Users back first: unlinking the backing would otherwise leave `old` unused for a moment.
    graph.replace(overlay, old);
    await graph.linkBacking(overlay, undefined);
    appended = false;
  };
  const release = async (): Promise<void> => {
    if (overlay !== undefined) await source.release(overlay);
  };
  try {
    checkSnapshotAllowed(graph, old);
    // Inside our own drained section: not held like a user's request (QEMU's bdrv_flush in a drained section).
    if (!old.readOnly) await old.flush({ nested: true }).catch(() => Promise.reject(new BlockLayerError('An IO error has occurred')));
    overlay = await source.open(old);
    checkOverlay(overlay);
    if (overlay === old || subtree(old).has(overlay)) {
      throw new BlockLayerError(`Making '${old.nodeName}' a backing child of '${overlay.nodeName}' would create a cycle`);
    }
    await graph.linkBacking(overlay, old);
    appended = true;
    graph.replace(old, overlay);
  } catch (error) {
    // The runner only aborts actions whose prepare returned: undo this one here.
    await undo();
    await release();
    throw error;
  }
  return {
    // QEMU's external_snapshot_commit ignores a failed reopen: the snapshot is taken either way.
    commit: () => setReadOnly(old, true).catch(() => undefined),
    abort: undo,
    clean: release,
  };
}

/** `node` and every node below it. */
function subtree(node: BlockNode): Set<BlockNode> {
  const found = new Set<BlockNode>([node]);
  for (const current of found) for (const edge of current.children.values()) found.add(edge.node);
  return found;
}
