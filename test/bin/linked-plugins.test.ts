/**
 * The bundled CLI takes its built-in plugins from bin/linked-plugins.ts:
 * one missing there would be looked for on disk beside the bundle, where
 * there is none, so the map must name exactly the manifest's modules, each
 * holding the plugin of the entry's name.
 */
import test from 'ava';
import { LINKED_PLUGINS } from '../../bin/linked-plugins.js';
import { defaultManifest } from '../../core/plugin/default-manifest.js';

test('the linked plugins are exactly the default manifest\'s, each the plugin it names', async (t) => {
  const { plugins } = defaultManifest().manifest;
  t.deepEqual([...LINKED_PLUGINS.keys()].sort(), plugins.map((p) => p.module).sort());
  for (const entry of plugins) {
    const exports = (await LINKED_PLUGINS.get(entry.module)!()) as { default?: { name?: string } };
    t.is(exports.default?.name, entry.name, entry.module);
  }
});
