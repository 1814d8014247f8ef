/**
 * The plugin seam. A plugin is a module whose default export is a Plugin:
 * its ContainerModule binds contributions (drivers, commands, job types,
 * transaction actions, hook taps) to the core's tokens, and the loader
 * collects them. Options from the manifest are validated against `options`
 * and bound to TOKENS.PluginOptions, named after the plugin.
 */
import type { ContainerModule } from 'inversify';
import type { TObject } from '@sinclair/typebox';

export interface Plugin {
  /** Unique name; the manifest entry must use the same one. */
  readonly name: string;
  /** The plugin's own version. */
  readonly version: string;
  /** The plugin API it was written for: a version (meaning ^version) or a semver range. */
  readonly apiVersion: string;
  /** Bindings only (Theia's modules): contributions to core tokens, the plugin's own services. */
  readonly module: ContainerModule;
  /** Schema of the plugin's manifest options. */
  readonly options?: TObject;
}

/** Duck-typed so a plugin built against another copy of inversify still loads. */
export function isPlugin(value: unknown): value is Plugin {
  const p = value as Partial<Plugin> | undefined;
  return (
    typeof p === 'object' &&
    p !== null &&
    typeof p.name === 'string' &&
    typeof p.version === 'string' &&
    typeof p.apiVersion === 'string' &&
    typeof p.module === 'object' &&
    p.module !== null &&
    typeof (p.module as { load?: unknown }).load === 'function'
  );
}
