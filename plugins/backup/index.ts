/** Plugin: live point-in-time backup — the job type, the commands and the transaction actions. */
import { ContainerModule } from 'inversify';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { DriverRegistry } from '../../core/block/driver-registry.js';
import type { ImageCreator } from '../../core/block/image-creator.js';
import type { JobTypeContribution } from '../../core/job/job-type-contribution.js';
import type { Plugin } from '../../core/plugin/plugin.js';
import { TOKENS } from '../../core/tokens.js';
import type { TransactionRunner } from '../../core/transaction/transaction-runner.js';
import { blockdevBackupAction, driveBackupAction } from './backup-actions.js';
import { backupCommands } from './backup-commands.js';
import { BackupPreparer } from './backup-preparer.js';

const backupJobType: JobTypeContribution = { type: 'backup', summary: 'point-in-time copy of a node' };

const plugin: Plugin = {
  name: 'backup',
  version: '0.1.0',
  apiVersion: '1.0.0',
  module: new ContainerModule(({ bind }) => {
    bind(BackupPreparer).toSelf().inSingletonScope();
    bind(TOKENS.JobTypeContribution).toConstantValue(backupJobType);
    bind(TOKENS.TransactionActionContribution)
      .toDynamicValue((c) => blockdevBackupAction(c.get<BlockGraph>(TOKENS.BlockGraph), c.get(BackupPreparer)))
      .inSingletonScope();
    bind(TOKENS.TransactionActionContribution)
      .toDynamicValue((c) =>
        driveBackupAction(
          c.get<BlockGraph>(TOKENS.BlockGraph),
          c.get<DriverRegistry>(TOKENS.DriverRegistry),
          c.get<ImageCreator>(TOKENS.ImageCreator),
          c.get(BackupPreparer),
        ),
      )
      .inSingletonScope();
    bind(TOKENS.CommandContribution)
      .toDynamicValue((c) => backupCommands(c.get<TransactionRunner>(TOKENS.TransactionRunner)))
      .inSingletonScope();
  }),
};

export default plugin;
