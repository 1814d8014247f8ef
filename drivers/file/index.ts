/** Plugin: the file protocol driver. */
import { ContainerModule } from 'inversify';
import type { Plugin } from '../../core/plugin/plugin.js';
import { TOKENS } from '../../core/tokens.js';
import { fileDriver } from './driver.js';

const plugin: Plugin = {
  name: 'file',
  version: '0.1.0',
  apiVersion: '1.0.0',
  module: new ContainerModule(({ bind }) => {
    bind(TOKENS.BlockDriverContribution).toConstantValue(fileDriver);
  }),
};

export default plugin;
