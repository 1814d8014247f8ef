/**
 * The plugin of a driver that needs nothing but its definition: the common
 * case for drivers (drivers/memory, drivers/raw …) and for third parties.
 */
import { ContainerModule } from 'inversify';
import type { BlockDriverDefinition } from '../block/driver.js';
import { TOKENS } from '../tokens.js';
import { PLUGIN_API_VERSION } from '../version.js';
import type { Plugin } from './plugin.js';

export interface DriverPluginInfo {
  /** The plugin name; by default the driver's name. */
  name?: string;
  version: string;
  /** Default: the plugin API this core provides. */
  apiVersion?: string;
}

export function driverPlugin(driver: BlockDriverDefinition, info: DriverPluginInfo): Plugin {
  return {
    name: info.name ?? driver.name,
    version: info.version,
    apiVersion: info.apiVersion ?? PLUGIN_API_VERSION,
    module: new ContainerModule(({ bind }) => {
      bind(TOKENS.BlockDriverContribution).toConstantValue(driver);
    }),
  };
}
