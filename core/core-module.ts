/** The core's own bindings: services as singletons, and the protocol commands every layer has. */
import { ContainerModule } from 'inversify';
import { BitmapStore } from './bitmap/bitmap-store.js';
import { BlockGraph } from './block/block-graph.js';
import { DriverRegistry } from './block/driver-registry.js';
import { ImageCreator } from './block/image-creator.js';
import { BlockLayerHooks } from './hooks/block-layer-hooks.js';
import { EventPublisher } from './hooks/event-publisher.js';
import { JobManager } from './job/job-manager.js';
import { JobTypeRegistry } from './job/job-type-registry.js';
import { Lifecycle } from './lifecycle.js';
import { ObjectRegistry } from './objects/object-registry.js';
import { CommandRegistry } from './qmp/command-registry.js';
import { ObjectAddCommand } from './qmp/commands/object-add.js';
import { ObjectDelCommand } from './qmp/commands/object-del.js';
import { QmpCapabilitiesCommand } from './qmp/commands/qmp-capabilities.js';
import { QueryCommandsCommand } from './qmp/commands/query-commands.js';
import { QueryQmpSchemaCommand } from './qmp/commands/query-qmp-schema.js';
import { QueryVersionCommand } from './qmp/commands/query-version.js';
import { QuitCommand } from './qmp/commands/quit.js';
import { QapiValidator } from './schema/qapi-validator.js';
import { TOKENS } from './tokens.js';
import { TransactionActionRegistry } from './transaction/transaction-action-registry.js';
import { TransactionRunner } from './transaction/transaction-runner.js';

export const coreModule = new ContainerModule(({ bind }) => {
  bind(TOKENS.BlockLayerHooks).to(BlockLayerHooks).inSingletonScope();
  bind(TOKENS.QapiValidator).to(QapiValidator).inSingletonScope();
  bind(TOKENS.DriverRegistry).to(DriverRegistry).inSingletonScope();
  bind(TOKENS.BlockGraph).to(BlockGraph).inSingletonScope();
  bind(TOKENS.ImageCreator).to(ImageCreator).inSingletonScope();
  bind(TOKENS.CommandRegistry).to(CommandRegistry).inSingletonScope();
  bind(TOKENS.JobTypeRegistry).to(JobTypeRegistry).inSingletonScope();
  bind(TOKENS.JobManager).to(JobManager).inSingletonScope();
  bind(TOKENS.TransactionActionRegistry).to(TransactionActionRegistry).inSingletonScope();
  bind(TOKENS.TransactionRunner).to(TransactionRunner).inSingletonScope();
  bind(TOKENS.EventPublisher).to(EventPublisher).inSingletonScope();
  bind(TOKENS.Lifecycle).to(Lifecycle).inSingletonScope();
  bind(TOKENS.ObjectRegistry).to(ObjectRegistry).inSingletonScope();
  bind(TOKENS.BitmapStore).to(BitmapStore).inSingletonScope();

  bind(TOKENS.CommandContribution).to(QmpCapabilitiesCommand).inSingletonScope();
  bind(TOKENS.CommandContribution).to(QueryVersionCommand).inSingletonScope();
  bind(TOKENS.CommandContribution).to(QueryCommandsCommand).inSingletonScope();
  bind(TOKENS.CommandContribution).to(QueryQmpSchemaCommand).inSingletonScope();
  bind(TOKENS.CommandContribution).to(QuitCommand).inSingletonScope();
  bind(TOKENS.CommandContribution).to(ObjectAddCommand).inSingletonScope();
  bind(TOKENS.CommandContribution).to(ObjectDelCommand).inSingletonScope();
});
