import test from 'ava';
import type { BlockNode } from '../../../core/block/block-node.js';
import type { NodeParent } from '../../../core/block/node-edge.js';
import { createTestLayer } from '../../../core/testing/index.js';

const layerWithRaw = () => createTestLayer({ plugins: ['raw', 'null-co'] });

test('blockdev-add opens a tree, naming the nested node, children first', async (t) => {
  const layer = await layerWithRaw();
  const added: string[] = [];
  layer.hooks.nodeAdded.tap('test', (node) => added.push(node.nodeName));
  const top = await layer.graph.add({ driver: 'raw', 'node-name': 'disk', file: { driver: 'memory', size: 65536 } });
  t.deepEqual(added, ['#block001', 'disk']);
  t.is(top.children.get('file')?.node.nodeName, '#block001');
  t.true(layer.graph.node('#block001')!.implicit);
  t.false(top.implicit);
});

test('node names follow QEMU rules', async (t) => {
  const layer = await layerWithRaw();
  await layer.graph.add({ driver: 'memory', 'node-name': 'm', size: 512 });
  const cases: [Record<string, unknown>, string][] = [
    [{ driver: 'memory', 'node-name': 'm', size: 512 }, "Duplicate nodes with node-name='m'"],
    [{ driver: 'memory', 'node-name': '1bad', size: 512 }, "Invalid node-name: '1bad'"],
    [{ driver: 'memory', 'node-name': 'a'.repeat(32), size: 512 }, 'Node name too long'],
    [{ driver: 'memory', size: 512 }, "'node-name' must be specified for the root node"],
    [{ driver: 'raw', 'node-name': 'r', file: { driver: 'memory', 'node-name': 'm', size: 1 } }, "Duplicate nodes with node-name='m'"],
    [{ driver: 'raw', 'node-name': 'r', file: 'nope' }, "Cannot find device='nope' nor node-name='nope'"],
    [{ driver: 'foo', 'node-name': 'x' }, "Parameter 'driver' does not accept value 'foo'"],
    [{ driver: 'raw', 'node-name': 'r', file: { driver: 'memory' } }, "Parameter 'file.size' is missing"],
  ];
  for (const [options, message] of cases) {
    await t.throwsAsync(layer.graph.add(options), { message }, JSON.stringify(options));
  }
  t.deepEqual(layer.graph.list().map((n) => n.nodeName), ['m'], 'failed adds left nothing behind');
});

test('a failed open closes what it opened and frees the names', async (t) => {
  const layer = await layerWithRaw();
  await t.throwsAsync(
    layer.graph.add({ driver: 'raw', 'node-name': 'r', offset: 4096, file: { driver: 'memory', 'node-name': 'inner', size: 512 } }),
    { message: 'Offset (4096) cannot be greater than size of the containing file (512)' },
  );
  t.deepEqual(layer.graph.list(), []);
  await layer.graph.add({ driver: 'memory', 'node-name': 'inner', size: 512 });
  t.pass();
});

test('blockdev-del refuses nodes in use, with QEMU messages', async (t) => {
  const layer = await layerWithRaw();
  await layer.graph.add({ driver: 'memory', 'node-name': 'base', size: 65536 });
  const top = await layer.graph.add({ driver: 'raw', 'node-name': 'top', file: 'base' });
  await layer.graph.add({ driver: 'raw', 'node-name': 'other', file: { driver: 'memory', size: 512 } });
  await t.throwsAsync(layer.graph.del('nope'), { message: "Failed to find node with node-name='nope'" });
  await t.throwsAsync(layer.graph.del('base'), { message: 'Block device base is in use' });
  await t.throwsAsync(layer.graph.del('#block001'), { message: 'Node #block001 is not owned by the monitor' });
  layer.graph.attachBackend('virtio0', top);
  await t.throwsAsync(layer.graph.del('top'), { message: 'Node top is in use' });
  layer.graph.detachBackend('virtio0');
  const job: NodeParent = { parentName: 'job0', parentKind: 'job', blocker: 'block device is in use by block job: backup' };
  const edge = layer.graph.attach(job, top, 'job');
  await t.throwsAsync(layer.graph.del('top'), { message: "Node 'top' is busy: block device is in use by block job: backup" });
  layer.graph.detach(edge);
  await layer.graph.del('top');
  await layer.graph.del('base');
  await layer.graph.del('other');
  t.deepEqual(layer.graph.list(), [], 'the implicit child of other went with it');
});

test('deleting a parent keeps children that were added on their own', async (t) => {
  const layer = await layerWithRaw();
  const removed: string[] = [];
  layer.hooks.nodeRemoved.tap('test', (n) => removed.push(n.nodeName));
  await layer.graph.add({ driver: 'memory', 'node-name': 'base', size: 4096 });
  await layer.graph.add({ driver: 'raw', 'node-name': 'top', file: 'base' });
  await layer.graph.del('top');
  t.deepEqual(removed, ['top']);
  t.is(layer.graph.node('base')?.parents.size, 0);
});

test('replace moves every user to the new node, except the new node itself', async (t) => {
  const layer = await layerWithRaw();
  const base = await layer.graph.add({ driver: 'memory', 'node-name': 'base', size: 4096 });
  const top = await layer.graph.add({ driver: 'raw', 'node-name': 'top', file: 'base' });
  const backend = layer.graph.attachBackend('virtio0', base);
  const filter = await layer.graph.add({ driver: 'raw', 'node-name': 'filter', file: 'base' });
  const replaced: string[] = [];
  layer.hooks.nodeReplaced.tap('test', (from, to) => replaced.push(`${from.nodeName}->${to.nodeName}`));
  layer.graph.replace(base, filter);
  t.is(top.children.get('file')!.node, filter);
  t.is(backend.node, filter);
  t.is(filter.children.get('file')!.node, base, 'the filter still sits on base');
  t.deepEqual([...base.parents].map((e) => e.parent.parentName), ['filter']);
  t.deepEqual(replaced, ['base->filter']);
  await backend.write(0, Buffer.alloc(512, 5));
  const back = Buffer.alloc(512);
  await base.read(0, back);
  t.true(back.every((b) => b === 5), 'I/O through the backend now passes the filter to base');
});

test('backends are named devices that device arguments resolve', async (t) => {
  const layer = await layerWithRaw();
  const node = await layer.graph.add({ driver: 'memory', 'node-name': 'm', size: 4096 });
  const backend = layer.graph.attachBackend('virtio0', 'm');
  t.is(layer.graph.lookup('virtio0'), node);
  t.is(layer.graph.lookup('m'), node);
  t.is(layer.graph.deviceName(node), 'virtio0');
  t.throws(() => layer.graph.attachBackend('virtio0', node), { message: "Device with id 'virtio0' already exists" });
  t.throws(() => layer.graph.attachBackend('m', node), { message: "Device name 'm' conflicts with an existing node name" });
  await t.throwsAsync(layer.graph.add({ driver: 'memory', 'node-name': 'virtio0', size: 1 }), {
    message: 'node-name=virtio0 is conflicting with a device id',
  });
  await backend.write(0, Buffer.from('hello'));
  const back = Buffer.alloc(5);
  await node.read(0, back);
  t.is(back.toString(), 'hello');
});

test('children opened with a read-only parent are read-only; referenced nodes keep their mode', async (t) => {
  const layer = await layerWithRaw();
  const shared = await layer.graph.add({ driver: 'memory', 'node-name': 'shared', size: 4096 });
  const ro = await layer.graph.add({ driver: 'raw', 'node-name': 'ro', 'read-only': true, file: { driver: 'memory', size: 4096 } });
  await layer.graph.add({ driver: 'raw', 'node-name': 'ro2', 'read-only': true, file: 'shared' });
  t.true(ro.children.get('file')!.node.readOnly);
  t.false(shared.readOnly);
  await t.throwsAsync(ro.write(0, Buffer.alloc(1)), { message: "Block node 'ro' is read-only" });
});

test('closeAll closes every node, parents before children', async (t) => {
  const layer = await layerWithRaw();
  const nodes: BlockNode[] = [];
  nodes.push(await layer.graph.add({ driver: 'memory', 'node-name': 'base', size: 4096 }));
  nodes.push(await layer.graph.add({ driver: 'raw', 'node-name': 'top', file: 'base' }));
  const order: string[] = [];
  layer.hooks.nodeRemoved.tap('test', (n) => order.push(n.nodeName));
  await layer.close();
  t.deepEqual(order, ['top', 'base']);
  t.true(nodes.every((n) => !n.isOpen));
});
