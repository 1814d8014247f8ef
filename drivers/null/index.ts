/** Plugin: the null-co driver. */
import { ContainerModule } from 'inversify';
import type { Plugin } from '../../core/plugin/plugin.js';
import { TOKENS } from '../../core/tokens.js';
import { nullDriver } from './driver.js';

const plugin: Plugin = {
  name: 'null-co',
  version: '0.1.0',
  apiVersion: '1.0.0',
  module: new ContainerModule(({ bind }) => {
    bind(TOKENS.BlockDriverContribution).toConstantValue(nullDriver);
  }),
};

export default plugin;
