/** The transaction actions `blockdev-backup` and `drive-backup`; the commands of the same names run them alone. */
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { DriverRegistry } from '../../core/block/driver-registry.js';
import type { ImageCreator } from '../../core/block/image-creator.js';
import type { TransactionActionContribution } from '../../core/transaction/transaction-action.js';
import type { BackupPreparer } from './backup-preparer.js';
import { openDriveBackupTarget } from './drive-backup-target.js';
import { BlockdevBackup, type BlockdevBackupArgs, DriveBackup, type DriveBackupArgs } from './options.js';

export function blockdevBackupAction(graph: BlockGraph, preparer: BackupPreparer): TransactionActionContribution<BlockdevBackupArgs> {
  return {
    type: 'blockdev-backup',
    data: BlockdevBackup,
    groupable: true,
    async prepare(args, context) {
      const source = graph.lookup(args.device);
      await context.drain(source);
      const target = graph.lookup(args.target);
      return preparer.prepare(args, source, target, context);
    },
  };
}

export function driveBackupAction(
  graph: BlockGraph,
  drivers: DriverRegistry,
  creator: ImageCreator,
  preparer: BackupPreparer,
): TransactionActionContribution<DriveBackupArgs> {
  return {
    type: 'drive-backup',
    data: DriveBackup,
    groupable: true,
    async prepare(args, context) {
      const source = graph.lookup(args.device);
      await context.drain(source);
      const target = await openDriveBackupTarget(args, source, graph, drivers, creator);
      return preparer.prepare({ ...args, sync: target.sync }, source, target.node, context, () => graph.closeIfUnused(target.node));
    },
  };
}
