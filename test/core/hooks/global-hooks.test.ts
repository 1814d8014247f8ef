import test from 'ava';
import { ContainerModule } from 'inversify';
import type { BlockLayerHooks, CommandExecution } from '../../../core/hooks/block-layer-hooks.js';
import type { HookContribution } from '../../../core/hooks/hook-contribution.js';
import type { Plugin } from '../../../core/plugin/plugin.js';
import { connectQmp, createTestLayer } from '../../../core/testing/index.js';
import { TOKENS } from '../../../core/tokens.js';

/** A plugin that taps global hooks through a HookContribution, as a third party would. */
function auditPlugin(log: string[]): Plugin {
  const contribution: HookContribution = {
    name: 'audit',
    apply(hooks: BlockLayerHooks) {
      hooks.nodeAdded.tap('audit', (node) => log.push(`added ${node.nodeName}`));
      hooks.nodeRemoved.tap('audit', (node) => log.push(`removed ${node.nodeName}`));
      hooks.commandExecuted.tap('audit', (e) => log.push(`${e.command} ${e.error ? 'failed' : 'ok'}`));
    },
  };
  return {
    name: 'audit',
    version: '0.0.0',
    apiVersion: '1.0.0',
    module: new ContainerModule(({ bind }) => {
      bind(TOKENS.HookContribution).toConstantValue(contribution);
    }),
  };
}

test('hook contributions are applied at load and see graph changes and commands', async (t) => {
  const log: string[] = [];
  const layer = await createTestLayer({ plugins: ['qmp-block-commands', auditPlugin(log)] });
  // The core's own BitmapStore first (it takes in the persistent bitmaps a node's image holds), then the plugin's.
  t.deepEqual(layer.hooks.nodeAdded.taps.map((tap) => tap.name), ['BitmapStore', 'audit']);
  await layer.execute('blockdev-add', { driver: 'memory', 'node-name': 'm', size: 512 });
  await t.throwsAsync(layer.execute('blockdev-del', { 'node-name': 'nope' }));
  await layer.execute('blockdev-del', { 'node-name': 'm' });
  t.deepEqual(log, ['added m', 'blockdev-add ok', 'blockdev-del failed', 'removed m', 'blockdev-del ok']);
});

test('commandExecuted reports QMP and API calls alike, with arguments and result or error', async (t) => {
  const layer = await createTestLayer({ plugins: ['qmp-block-commands'] });
  const seen: CommandExecution[] = [];
  layer.hooks.commandExecuted.tap('test', (e) => seen.push(e));
  const { client, close } = await connectQmp(layer);
  await client.execute('blockdev-del', { 'node-name': 'x' });
  await layer.execute('query-version');
  t.is(seen[0]!.command, 'qmp_capabilities');
  t.deepEqual(seen[1]!.arguments, { 'node-name': 'x' });
  t.is(seen[1]!.error?.message, "Failed to find node with node-name='x'");
  t.is(seen[2]!.command, 'query-version');
  t.deepEqual((seen[2]!.result as { qemu: unknown }).qemu, { micro: 0, minor: 2, major: 7 });
  t.is(seen.length, 3, 'a command rejected before it ran (bad arguments) is not reported');
  await client.execute('blockdev-del', { bogus: 1 });
  t.is(seen.length, 3);
  await close();
});
