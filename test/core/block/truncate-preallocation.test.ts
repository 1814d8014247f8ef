/**
 * The truncate seam's preallocation: a driver gets the mode it declares it
 * can do (through a format that passes its file's modes on), 'off' by
 * default; any other mode is refused by the core with QEMU's message
 * before the driver sees it.
 */
import { ContainerModule } from 'inversify';
import test from 'ava';
import { defineBlockDriver, type PreallocMode } from '../../../core/block/driver.js';
import type { Plugin } from '../../../core/plugin/plugin.js';
import { Qapi } from '../../../core/schema/qapi.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { TOKENS } from '../../../core/tokens.js';

/** A protocol driver that can preallocate with 'full' only, and notes each truncate. */
function fullOnlyPlugin(seen: [number, PreallocMode][]): Plugin {
  const driver = defineBlockDriver<{ size: number }, { size: number }>({
    name: 'full-only',
    kind: 'protocol',
    summary: 'test driver: truncate preallocates with full only',
    options: Qapi.struct('BlockdevOptionsFullOnly', { size: Qapi.size() }),
    capabilities: { concurrency: 'parallel', preallocation: ['full'] },
    open: async ({ options }) => ({ size: options.size }),
    getLength: (state) => state.size,
    read: async (_state, _offset, buf) => void buf.fill(0),
    truncate: async (state, length, preallocation) => {
      seen.push([length, preallocation]);
      state.size = length;
    },
  });
  return {
    name: 'full-only',
    version: '0.0.0',
    apiVersion: '1.0.0',
    module: new ContainerModule(({ bind }) => {
      bind(TOKENS.BlockDriverContribution).toConstantValue(driver);
    }),
  };
}

test('a declared mode reaches the driver, through raw; off is the default', async (t) => {
  const seen: [number, PreallocMode][] = [];
  const layer = await createTestLayer({ plugins: ['raw', fullOnlyPlugin(seen)] });
  const node = await layer.graph.add({ driver: 'raw', 'node-name': 'r', file: { driver: 'full-only', size: 4096 } });
  await node.truncate(8192, { preallocation: 'full' });
  await node.truncate(16384);
  t.deepEqual(seen, [
    [8192, 'full'],
    [16384, 'off'],
  ]);
  t.is(node.length, 16384);
});

test('a mode the driver does not declare is refused before it reaches it, the size unchanged', async (t) => {
  const seen: [number, PreallocMode][] = [];
  const layer = await createTestLayer({ plugins: ['raw', 'memory', fullOnlyPlugin(seen)] });
  const node = await layer.graph.add({ driver: 'full-only', 'node-name': 'f', size: 4096 });
  await t.throwsAsync(node.truncate(8192, { preallocation: 'falloc' }), { message: "Unsupported preallocation mode 'falloc'" });
  t.deepEqual(seen, []);
  t.is(node.length, 4096);
  const memory = await layer.graph.add({ driver: 'memory', 'node-name': 'm', size: 4096 });
  await t.throwsAsync(memory.truncate(8192, { preallocation: 'metadata' }), { message: "Unsupported preallocation mode 'metadata'" });
  t.is(memory.length, 4096);
});
