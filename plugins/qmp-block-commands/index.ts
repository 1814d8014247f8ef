/** Plugin: the QMP commands that add, delete, list and resize nodes, and list devices and their I/O statistics. */
import { ContainerModule } from 'inversify';
import type { Plugin } from '../../core/plugin/plugin.js';
import { TOKENS } from '../../core/tokens.js';
import { BlockResizeCommand } from './block-resize.js';
import { BlockdevAddCommand } from './blockdev-add.js';
import { BlockdevDelCommand } from './blockdev-del.js';
import { QueryBlockCommand } from './query-block.js';
import { QueryBlockstatsCommand } from './query-blockstats.js';
import { QueryNamedBlockNodesCommand } from './query-named-block-nodes.js';

const plugin: Plugin = {
  name: 'qmp-block-commands',
  version: '0.1.0',
  apiVersion: '1.0.0',
  module: new ContainerModule(({ bind }) => {
    bind(TOKENS.CommandContribution).to(BlockdevAddCommand).inSingletonScope();
    bind(TOKENS.CommandContribution).to(BlockdevDelCommand).inSingletonScope();
    bind(TOKENS.CommandContribution).to(QueryNamedBlockNodesCommand).inSingletonScope();
    bind(TOKENS.CommandContribution).to(QueryBlockCommand).inSingletonScope();
    bind(TOKENS.CommandContribution).to(QueryBlockstatsCommand).inSingletonScope();
    bind(TOKENS.CommandContribution).to(BlockResizeCommand).inSingletonScope();
  }),
};

export default plugin;
