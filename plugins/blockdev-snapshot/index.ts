/**
 * Plugin: snapshots over QMP — external (blockdev-snapshot-sync, blockdev-snapshot) and internal
 * (blockdev-snapshot-internal-sync, blockdev-snapshot-delete-internal-sync), as commands and
 * transaction actions.
 */
import { ContainerModule } from 'inversify';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { DriverRegistry } from '../../core/block/driver-registry.js';
import type { ImageCreator } from '../../core/block/image-creator.js';
import type { Plugin } from '../../core/plugin/plugin.js';
import { TOKENS } from '../../core/tokens.js';
import type { TransactionRunner } from '../../core/transaction/transaction-runner.js';
import { internalSnapshotAction, internalSnapshotCommands } from './internal-snapshot.js';
import { snapshotAction, snapshotCommands, snapshotSyncAction } from './snapshot-actions.js';

const plugin: Plugin = {
  name: 'blockdev-snapshot',
  version: '0.1.0',
  apiVersion: '1.0.0',
  module: new ContainerModule(({ bind }) => {
    bind(TOKENS.TransactionActionContribution)
      .toDynamicValue((c) =>
        snapshotSyncAction(c.get<BlockGraph>(TOKENS.BlockGraph), c.get<DriverRegistry>(TOKENS.DriverRegistry), c.get<ImageCreator>(TOKENS.ImageCreator)),
      )
      .inSingletonScope();
    bind(TOKENS.TransactionActionContribution)
      .toDynamicValue((c) => snapshotAction(c.get<BlockGraph>(TOKENS.BlockGraph)))
      .inSingletonScope();
    bind(TOKENS.TransactionActionContribution)
      .toDynamicValue((c) => internalSnapshotAction(c.get<BlockGraph>(TOKENS.BlockGraph)))
      .inSingletonScope();
    bind(TOKENS.CommandContribution)
      .toDynamicValue((c) => snapshotCommands(c.get<TransactionRunner>(TOKENS.TransactionRunner)))
      .inSingletonScope();
    bind(TOKENS.CommandContribution)
      .toDynamicValue((c) => internalSnapshotCommands(c.get<BlockGraph>(TOKENS.BlockGraph), c.get<TransactionRunner>(TOKENS.TransactionRunner)))
      .inSingletonScope();
  }),
};

export default plugin;
