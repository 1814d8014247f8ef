/** Plugin: live mirroring — the `mirror` job type and the commands blockdev-mirror and drive-mirror. */
import { ContainerModule } from 'inversify';
import type { BlockGraph } from '../../core/block/block-graph.js';
import type { DriverRegistry } from '../../core/block/driver-registry.js';
import type { ImageCreator } from '../../core/block/image-creator.js';
import type { JobTypeContribution } from '../../core/job/job-type-contribution.js';
import type { Plugin } from '../../core/plugin/plugin.js';
import { TOKENS } from '../../core/tokens.js';
import { mirrorCommands } from './mirror-commands.js';
import { MirrorStarter } from './mirror-starter.js';

const mirrorJobType: JobTypeContribution = { type: 'mirror', summary: 'keeps a copy of a node in sync, then switches its users to it' };

const plugin: Plugin = {
  name: 'mirror',
  version: '0.1.0',
  apiVersion: '1.0.0',
  module: new ContainerModule(({ bind }) => {
    bind(MirrorStarter).toSelf().inSingletonScope();
    bind(TOKENS.JobTypeContribution).toConstantValue(mirrorJobType);
    bind(TOKENS.CommandContribution)
      .toDynamicValue((c) =>
        mirrorCommands(
          c.get<BlockGraph>(TOKENS.BlockGraph),
          c.get<DriverRegistry>(TOKENS.DriverRegistry),
          c.get<ImageCreator>(TOKENS.ImageCreator),
          c.get(MirrorStarter),
        ),
      )
      .inSingletonScope();
  }),
};

export default plugin;
