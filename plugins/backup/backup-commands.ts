/** blockdev-backup and drive-backup: a transaction of that one action, as in QEMU. */
import type { QmpCommand } from '../../core/qmp/qmp-command.js';
import type { TransactionRunner } from '../../core/transaction/transaction-runner.js';
import { BlockdevBackup, DriveBackup } from './options.js';

export function backupCommands(runner: TransactionRunner): QmpCommand[] {
  return [
    {
      name: 'blockdev-backup',
      summary: 'Start a point-in-time backup of a node to another node',
      args: BlockdevBackup,
      execute: (data: unknown) => runner.run([{ type: 'blockdev-backup', data }]),
    },
    {
      name: 'drive-backup',
      summary: 'Start a point-in-time backup of a node to an image file',
      args: DriveBackup,
      execute: (data: unknown) => runner.run([{ type: 'drive-backup', data }]),
    },
  ];
}
