/** Plugin: block-set-write-threshold and its BLOCK_WRITE_THRESHOLD event. */
import { ContainerModule } from 'inversify';
import type { Plugin } from '../../core/plugin/plugin.js';
import { TOKENS } from '../../core/tokens.js';
import { BlockSetWriteThresholdCommand } from './block-set-write-threshold.js';

const plugin: Plugin = {
  name: 'write-threshold',
  version: '0.1.0',
  apiVersion: '1.0.0',
  module: new ContainerModule(({ bind }) => {
    bind(TOKENS.CommandContribution).to(BlockSetWriteThresholdCommand).inSingletonScope();
  }),
};

export default plugin;
