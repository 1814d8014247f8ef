/**
 * The test kit's layer: just the plugins a test names, plus the memory
 * driver, so each plugin gets fast unit tests of its own (Theia's
 * per-spec containers). Built-in plugins are named by their manifest name;
 * a third-party plugin is passed as the plugin object.
 */
import { BlockLayer, type InlinePlugin } from '../block-layer.js';
import { defaultManifest } from '../plugin/default-manifest.js';
import type { Plugin } from '../plugin/plugin.js';
import type { PluginEntry } from '../plugin/plugin-manifest.js';

export interface TestLayerOptions {
  /** Built-in plugin names ('raw', 'qmp-block-commands' …), plugin objects, or plugins with options. */
  plugins?: readonly (string | Plugin | InlinePlugin)[];
}

export async function createTestLayer(options: TestLayerOptions = {}): Promise<BlockLayer> {
  const builtin = defaultManifest();
  const wanted = new Set<string>(['memory']);
  const inline: (Plugin | InlinePlugin)[] = [];
  for (const item of options.plugins ?? []) {
    if (typeof item === 'string') wanted.add(item);
    else inline.push(item);
  }
  const entries: PluginEntry[] = [];
  for (const name of wanted) {
    const entry = builtin.manifest.plugins.find((p) => p.name === name);
    if (entry === undefined) {
      const known = builtin.manifest.plugins.map((p) => p.name).join(', ');
      throw new Error(`createTestLayer: no built-in plugin named '${name}' (built-in: ${known})`);
    }
    entries.push({ ...entry, enabled: true });
  }
  return BlockLayer.create({ manifest: { plugins: entries }, baseDir: builtin.baseDir, plugins: inline });
}
