/** Plugin: the nbd driver, given the layer's objects (for tls-creds). */
import { ContainerModule } from 'inversify';
import type { ObjectRegistry } from '../../core/objects/object-registry.js';
import type { Plugin } from '../../core/plugin/plugin.js';
import { TOKENS } from '../../core/tokens.js';
import { PLUGIN_API_VERSION } from '../../core/version.js';
import { createNbdDriver } from './driver.js';

const plugin: Plugin = {
  name: 'nbd',
  version: '0.1.0',
  apiVersion: PLUGIN_API_VERSION,
  module: new ContainerModule(({ bind }) => {
    bind(TOKENS.BlockDriverContribution)
      .toDynamicValue((ctx) => createNbdDriver(ctx.get<ObjectRegistry>(TOKENS.ObjectRegistry)))
      .inSingletonScope();
  }),
};

export default plugin;
