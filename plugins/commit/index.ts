/** Plugin: live commit — the `commit` job type (intermediate and active) and the command block-commit. */
import { ContainerModule } from 'inversify';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { JobTypeContribution } from '../../core/job/job-type-contribution.js';
import type { Plugin } from '../../core/plugin/plugin.js';
import { TOKENS } from '../../core/tokens.js';
import { commitCommands } from './commit-command.js';
import { CommitStarter } from './commit-starter.js';

const commitJobType: JobTypeContribution = { type: 'commit', summary: 'writes images of a backing chain down into a base and drops them' };

const plugin: Plugin = {
  name: 'commit',
  version: '0.1.0',
  apiVersion: '1.0.0',
  module: new ContainerModule(({ bind }) => {
    bind(CommitStarter).toSelf().inSingletonScope();
    bind(TOKENS.JobTypeContribution).toConstantValue(commitJobType);
    bind(TOKENS.CommandContribution)
      .toDynamicValue((c) => commitCommands(c.get<BlockGraph>(TOKENS.BlockGraph), c.get(CommitStarter)))
      .inSingletonScope();
  }),
};

export default plugin;
