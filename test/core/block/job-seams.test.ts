/**
 * The graph seams jobs share (issue 6): which users keep a node from other
 * jobs ("Node 'x' is busy: …", named by device if it has one), which nodes
 * are root nodes, node replacement that never makes a loop and can leave
 * chosen edges where they are, and a drained section opened by a job on its
 * own nodes, which pauses it without waiting for it.
 */
import test from 'ava';
import { DrainSection } from '../../../core/block/drain-section.js';
import type { NodeParent } from '../../../core/block/node-edge.js';
import { createTestLayer } from '../../../core/testing/index.js';

const job = (id: string, type: string): NodeParent => ({ parentName: id, parentKind: 'job', blocker: `block device is in use by block job: ${type}` });

test('checkNotBusy: a job\'s blocker, named by device or node name; isRoot: only devices and exports above', async (t) => {
  const layer = await createTestLayer({ plugins: ['raw'] });
  const { graph } = layer;
  const top = await graph.add({ driver: 'raw', 'node-name': 'top', file: { driver: 'memory', size: 65536 } });
  const plain = await graph.add({ driver: 'memory', 'node-name': 'plain', size: 65536 });
  t.notThrows(() => graph.checkNotBusy(top));
  t.true(graph.isRoot(top));
  t.false(graph.isRoot(top.children.get('file')!.node), 'a child is not a root');
  graph.attachBackend('drive0', top);
  t.true(graph.isRoot(top), 'a device above is fine');
  const edge = graph.attach(job('j', 'stream'), top, 'main node');
  t.throws(() => graph.checkNotBusy(top), { message: "Node 'drive0' is busy: block device is in use by block job: stream" });
  t.false(graph.isRoot(top), 'a node a job holds is not a root');
  graph.detach(edge);
  graph.attach(job('k', 'commit'), plain, 'base');
  t.throws(() => graph.checkNotBusy(plain), { message: "Node 'plain' is busy: block device is in use by block job: commit" });
  await t.throwsAsync(graph.del('plain'), { message: "Node 'plain' is busy: block device is in use by block job: commit" });
});

test('replace: edges from below the new node stay (no loops), `keep` leaves chosen edges', async (t) => {
  const layer = await createTestLayer({ plugins: ['raw'] });
  const { graph } = layer;
  const a = await graph.add({ driver: 'memory', 'node-name': 'a', size: 65536 });
  const b = await graph.add({ driver: 'memory', 'node-name': 'b', size: 65536 });
  // `over` uses `a` below it; `a` also has a device and another user.
  const over = await graph.add({ driver: 'raw', 'node-name': 'over', file: 'a' });
  const device = graph.attachBackend('drive0', a);
  const other: NodeParent = { parentName: 'x', parentKind: 'other' };
  const kept = graph.attach(other, a, 'x');
  graph.replace(a, over, (edge) => edge === kept);
  t.is(over.children.get('file')!.node, a, 'the new node keeps its own child');
  t.is(device.node, over);
  t.is(kept.node, a);
  // A node two levels down: its edge is in the subtree too.
  const top = await graph.add({ driver: 'raw', 'node-name': 'top2', file: 'over' });
  graph.replace(a, top);
  t.is(over.children.get('file')!.node, a, 'an edge below the new node is not moved (it would make a loop)');
  t.is(kept.node, top);
  graph.replace(over, b);
  t.is(device.node, b);
});

test('a job draining its own nodes is paused by the section but not waited for', async (t) => {
  const layer = await createTestLayer({ plugins: [] });
  const node = await layer.graph.add({ driver: 'memory', 'node-name': 'n', size: 65536 });
  const calls: string[] = [];
  const owner: NodeParent = {
    parentName: 'j',
    parentKind: 'job',
    drainedBegin: () => calls.push('begin'),
    drainedPoll: () => new Promise<void>(() => calls.push('poll (never settles)')),
    drainedEnd: () => calls.push('end'),
  };
  layer.graph.attach(owner, node, 'main node');
  const section = new DrainSection(owner);
  section.addNode(node);
  await section.settle();
  t.true(node.quiesced);
  section.end();
  t.deepEqual(calls, ['begin', 'end']);
  t.false(node.quiesced);
});
