/**
 * Taps a plugin adds to the global hooks. `apply` runs once, when the plugin
 * is loaded; tap with `{ name: <plugin name> }` so `taps` shows who listens.
 */
import type { BlockLayerHooks } from './block-layer-hooks.js';

export interface HookContribution {
  readonly name: string;
  apply(hooks: BlockLayerHooks): void;
}
