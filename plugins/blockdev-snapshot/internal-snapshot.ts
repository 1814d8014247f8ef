/**
 * Internal snapshots over QMP (QEMU 7.2's blockdev.c): the transaction
 * action `blockdev-snapshot-internal-sync` (prepare takes the snapshot,
 * abort deletes it again; not with completion-mode grouped), the command of
 * the same name, which runs a transaction of that one action, and
 * `blockdev-snapshot-delete-internal-sync`, which answers with what it
 * deleted. Checks in QEMU's order and words; the image's driver does the
 * work (BlockNode.snapshotCreate, core/block/driver.ts).
 */
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { BlockNode } from '../../core/block/block-node.js';
import type { SnapshotInfo } from '../../core/block/driver.js';
import { BlockIoError, BlockLayerError, strerror } from '../../core/errors.js';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import type { TransactionActionContribution } from '../../core/transaction/transaction-action.js';
import type { TransactionRunner } from '../../core/transaction/transaction-runner.js';
import {
  BlockdevSnapshotDeleteInternal,
  type BlockdevSnapshotDeleteInternalArgs,
  BlockdevSnapshotInternal,
  type BlockdevSnapshotInternalArgs,
  SnapshotInfoSchema,
} from './options.js';
import { checkSnapshotAllowed } from './snapshot-checks.js';
import { realTimeNs } from '../../core/util/real-time.js';

/** QEMU's icount when no replay records one. */
const NO_ICOUNT = -1n;

/** qmp_get_root_bs: a backend or node name, of a node no other node sits on. */
function rootNode(graph: BlockGraph, device: string): BlockNode {
  const node = graph.lookup(device);
  if (!graph.isRoot(node)) throw new BlockLayerError('Need a root block node');
  return node;
}

/** The image's snapshots; bdrv_snapshot_list's ENOTSUP for a driver that keeps none. */
async function snapshotsOf(node: BlockNode): Promise<SnapshotInfo[]> {
  if (node.driver.snapshotCreate === undefined) throw new BlockLayerError(`Failed to get a snapshot list: ${strerror('ENOTSUP')}`);
  return (await node.driver.describe?.(node.driverState))?.snapshots ?? [];
}

export function internalSnapshotAction(graph: BlockGraph): TransactionActionContribution<BlockdevSnapshotInternalArgs> {
  return {
    type: 'blockdev-snapshot-internal-sync',
    data: BlockdevSnapshotInternal,
    async prepare({ device, name }, context) {
      const node = rootNode(graph, device);
      await context.drain(node);
      checkSnapshotAllowed(graph, node);
      if (node.readOnly) throw new BlockLayerError(`Device '${device}' is read only`);
      if (node.driver.snapshotCreate === undefined) {
        throw new BlockLayerError(`Block format '${node.driver.name}' used by device '${device}' does not support internal snapshots`);
      }
      if (name === '') throw new BlockLayerError('Name is empty');
      if ((await snapshotsOf(node)).some((sn) => sn.name === name)) {
        throw new BlockLayerError(`Snapshot with name '${name}' already exists on device '${device}'`);
      }
      // qemu-storage-daemon's virtual clock reads as the real time, so both fields hold it.
      const now = realTimeNs();
      const created = await node
        .snapshotCreate({ name, dateSec: Number(now / 1_000_000_000n), dateNsec: Number(now % 1_000_000_000n), vmClockNsec: now, icount: NO_ICOUNT })
        .catch((error: unknown) => {
          const errno = error instanceof BlockIoError ? error.errno : 'EIO';
          throw new BlockLayerError(`Failed to create snapshot '${name}' on device '${device}': ${strerror(errno)}`);
        });
      return {
        // As QEMU's internal_snapshot_abort: a failure is only reported (on stderr), the transaction's error stands.
        abort: () =>
          node.snapshotDelete(created.id, created.name).catch((error: unknown) => {
            process.stderr.write(
              `Failed to delete snapshot with id '${created.id}' and name '${created.name}' on device '${device}' in abort: ${(error as Error).message}\n`,
            );
          }),
      };
    },
  };
}

/** qmp_blockdev_snapshot_delete_internal_sync. */
async function deleteInternalSnapshot(graph: BlockGraph, { device, id, name }: BlockdevSnapshotDeleteInternalArgs): Promise<SnapshotInfo> {
  const node = rootNode(graph, device);
  if (id === undefined && name === undefined) throw new BlockLayerError('Name or id must be provided');
  checkSnapshotAllowed(graph, node);
  const found = (await snapshotsOf(node)).find((sn) => (id === undefined || sn.id === id) && (name === undefined || sn.name === name));
  if (found === undefined) {
    throw new BlockLayerError(`Snapshot with id '${id ?? 'null'}' and name '${name ?? 'null'}' does not exist on device '${device}'`);
  }
  await node.snapshotDelete(id, name).catch((error: unknown) => {
    throw new BlockLayerError((error as Error).message);
  });
  return found;
}

export function internalSnapshotCommands(graph: BlockGraph, runner: TransactionRunner): QmpCommand[] {
  return [
    {
      name: 'blockdev-snapshot-internal-sync',
      summary: "Record the image's current content as an internal snapshot (qcow2)",
      args: BlockdevSnapshotInternal,
      execute: (data: unknown) => runner.run([{ type: 'blockdev-snapshot-internal-sync', data }]),
    },
    {
      name: 'blockdev-snapshot-delete-internal-sync',
      summary: 'Delete an internal snapshot by id and/or name; returns what it deleted',
      args: BlockdevSnapshotDeleteInternal,
      returns: SnapshotInfoSchema,
      execute: (args: BlockdevSnapshotDeleteInternalArgs) => deleteInternalSnapshot(graph, args),
    },
  ];
}
