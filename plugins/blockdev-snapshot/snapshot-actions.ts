/**
 * The transaction actions `blockdev-snapshot-sync` and `blockdev-snapshot`,
 * and the commands of the same names, which run a transaction of that one
 * action (QEMU's blockdev_do_action): everything drained once, prepare,
 * then commit or abort. Neither is allowed with completion-mode grouped.
 */
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { DriverRegistry } from '../../core/block/driver-registry.js';
import type { ImageCreator } from '../../core/block/image-creator.js';
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import type { TransactionActionContribution } from '../../core/transaction/transaction-action.js';
import type { TransactionRunner } from '../../core/transaction/transaction-runner.js';
import { prepareExternalSnapshot } from './external-snapshot.js';
import { BlockdevSnapshot, type BlockdevSnapshotArgs, BlockdevSnapshotSync, type BlockdevSnapshotSyncArgs } from './options.js';
import { lookupNode } from './snapshot-checks.js';
import { existingOverlay, newOverlay } from './snapshot-overlay.js';

export function snapshotSyncAction(
  graph: BlockGraph,
  drivers: DriverRegistry,
  creator: ImageCreator,
): TransactionActionContribution<BlockdevSnapshotSyncArgs> {
  return {
    type: 'blockdev-snapshot-sync',
    data: BlockdevSnapshotSync,
    prepare: (args, context) =>
      prepareExternalSnapshot(graph, context, () => lookupNode(graph, args.device, args['node-name']), newOverlay(args, graph, drivers, creator)),
  };
}

export function snapshotAction(graph: BlockGraph): TransactionActionContribution<BlockdevSnapshotArgs> {
  return {
    type: 'blockdev-snapshot',
    data: BlockdevSnapshot,
    prepare: (args, context) => prepareExternalSnapshot(graph, context, () => lookupNode(graph, args.node, args.node), existingOverlay(args, graph)),
  };
}

export function snapshotCommands(runner: TransactionRunner): QmpCommand[] {
  return [
    {
      name: 'blockdev-snapshot-sync',
      summary: 'Put a new overlay image on top of a node; its users write to the overlay from now on',
      args: BlockdevSnapshotSync,
      execute: (data: unknown) => runner.run([{ type: 'blockdev-snapshot-sync', data }]),
    },
    {
      name: 'blockdev-snapshot',
      summary: 'Put an existing node on top of another as its overlay',
      args: BlockdevSnapshot,
      execute: (data: unknown) => runner.run([{ type: 'blockdev-snapshot', data }]),
    },
  ];
}
