/** Plugin: image streaming — the `stream` job type and the command block-stream. */
import { ContainerModule } from 'inversify';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { JobTypeContribution } from '../../core/job/job-type-contribution.js';
import type { Plugin } from '../../core/plugin/plugin.js';
import { TOKENS } from '../../core/tokens.js';
import { streamCommands } from './stream-command.js';
import { StreamStarter } from './stream-starter.js';

const streamJobType: JobTypeContribution = { type: 'stream', summary: "copies a node's backing chain into it and drops the backing files" };

const plugin: Plugin = {
  name: 'stream',
  version: '0.1.0',
  apiVersion: '1.0.0',
  module: new ContainerModule(({ bind }) => {
    bind(StreamStarter).toSelf().inSingletonScope();
    bind(TOKENS.JobTypeContribution).toConstantValue(streamJobType);
    bind(TOKENS.CommandContribution)
      .toDynamicValue((c) => streamCommands(c.get<BlockGraph>(TOKENS.BlockGraph), c.get(StreamStarter)))
      .inSingletonScope();
  }),
};

export default plugin;
