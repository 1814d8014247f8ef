/** Plugin: the NBD server — nbd-server-start/-stop, block exports over NBD and their commands. */
import { ContainerModule } from 'inversify';
import type { Plugin } from '../../core/plugin/plugin.js';
import { TOKENS } from '../../core/tokens.js';
import { BlockExportAddCommand } from './block-export-add.js';
import { BlockExportDelCommand } from './block-export-del.js';
import { NbdServer } from './nbd-server.js';
import { NbdServerAddCommand } from './nbd-server-add.js';
import { NbdServerRemoveCommand } from './nbd-server-remove.js';
import { NbdServerStartCommand } from './nbd-server-start.js';
import { NbdServerStopCommand } from './nbd-server-stop.js';
import { QueryBlockExportsCommand } from './query-block-exports.js';

const plugin: Plugin = {
  name: 'nbd-server',
  version: '0.1.0',
  apiVersion: '1.0.0',
  module: new ContainerModule(({ bind }) => {
    bind(NbdServer).toSelf().inSingletonScope();
    bind(TOKENS.CommandContribution).to(NbdServerStartCommand).inSingletonScope();
    bind(TOKENS.CommandContribution).to(NbdServerStopCommand).inSingletonScope();
    bind(TOKENS.CommandContribution).to(BlockExportAddCommand).inSingletonScope();
    bind(TOKENS.CommandContribution).to(BlockExportDelCommand).inSingletonScope();
    bind(TOKENS.CommandContribution).to(NbdServerAddCommand).inSingletonScope();
    bind(TOKENS.CommandContribution).to(NbdServerRemoveCommand).inSingletonScope();
    bind(TOKENS.CommandContribution).to(QueryBlockExportsCommand).inSingletonScope();
  }),
};

export default plugin;
