/**
 * Opening a quorum: children by node name or inline (roles children.0 …),
 * QEMU's option checks and messages, equal sizes, the merged limits.
 */
import test from 'ava';
import { nodeFilename } from '../../../core/block/node-info.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { RecordingControl, recordingPlugin } from '../../helpers/recording-driver.js';
import { quorumFixture, SIZE } from './quorum-fixture.js';

test('children named or inline become the edges children.0, children.1 …', async (t) => {
  const f = await quorumFixture();
  await f.memory('a', 'b');
  const q = await f.quorum({ 'vote-threshold': 2, children: ['a', { driver: 'memory', 'node-name': 'c', size: SIZE }, 'b'] });
  t.deepEqual(
    [...q.children].map(([role, edge]) => [role, edge.node.nodeName]),
    [['children.0', 'a'], ['children.1', 'c'], ['children.2', 'b']],
  );
  t.is(q.length, SIZE);
  t.true([...f.layer.graph.node('a')!.parents].some((e) => e.parent === q));
  await f.layer.close();
});

test('an inline child without a name gets an implicit one and goes with the quorum', async (t) => {
  const f = await quorumFixture();
  const q = await f.quorum({ 'vote-threshold': 1, children: [{ driver: 'memory', size: SIZE }] });
  const child = q.children.get('children.0')!.node;
  t.regex(child.nodeName, /^#block\d+$/);
  await f.layer.graph.del('q');
  t.is(f.layer.graph.node(child.nodeName), undefined);
  await f.layer.close();
});

test("vote-threshold and children checks, with QEMU's messages", async (t) => {
  const f = await quorumFixture();
  await f.memory('a', 'b');
  const refused = (options: Record<string, unknown>, message: string) =>
    t.throwsAsync(f.quorum(options), { message }, JSON.stringify(options));
  await refused({ 'vote-threshold': 1, children: [] }, 'Number of provided children must be 1 or more');
  await refused({ 'vote-threshold': 0, children: ['a'] }, "Parameter 'vote-threshold' expects a value >= 1");
  await refused({ 'vote-threshold': 3, children: ['a', 'b'] }, 'threshold may not exceed children count');
  await refused({ children: ['a'] }, "Parameter 'vote-threshold' is missing");
  await refused(
    { 'vote-threshold': 1, children: ['a', 'b'], blkverify: true },
    'blkverify=on can only be set if there are exactly two files and vote-threshold is 2',
  );
  await refused(
    { 'vote-threshold': 2, children: ['a', 'b'], blkverify: true, 'rewrite-corrupted': true },
    'rewrite-corrupted=on cannot be used with blkverify=on',
  );
  await refused({ 'vote-threshold': 1, children: ['a'], 'read-pattern': 'lifo' }, "Parameter 'read-pattern' does not accept value 'lifo'");
  await refused({ 'vote-threshold': 1, children: ['nope'] }, "Cannot find device='nope' nor node-name='nope'");
  t.is(f.layer.graph.node('q'), undefined);
  t.is(f.layer.graph.node('a')!.parents.size, 0, 'a refused quorum leaves no edge behind');
  await f.layer.close();
});

test('read-pattern=fifo does not look at blkverify or rewrite-corrupted, as QEMU', async (t) => {
  const f = await quorumFixture();
  await f.memory('a', 'b', 'c');
  await t.notThrowsAsync(
    f.quorum({ 'vote-threshold': 1, children: ['a', 'b', 'c'], 'read-pattern': 'fifo', blkverify: true, 'rewrite-corrupted': true }),
  );
  await f.layer.close();
});

test('children of different sizes are refused, as QEMU fails to get the length', async (t) => {
  const f = await quorumFixture();
  await f.memory('a');
  await f.layer.graph.add({ driver: 'memory', 'node-name': 'small', size: SIZE / 2 });
  await t.throwsAsync(f.quorum({ 'vote-threshold': 1, children: ['a', 'small'] }), {
    message: 'Could not refresh total sector count: Input/output error',
  });
  await f.layer.close();
});

test('limits are the strictest of the children; requests reach every child shaped for all of them', async (t) => {
  const control = new RecordingControl();
  const layer = await createTestLayer({ plugins: ['quorum', recordingPlugin(control)] });
  await layer.graph.add({ driver: 'recording', 'node-name': 'r', size: SIZE, align: 4096, 'max-transfer': 65536 });
  await layer.graph.add({ driver: 'memory', 'node-name': 'm', size: SIZE });
  const q = await layer.graph.add({ driver: 'quorum', 'node-name': 'q', 'vote-threshold': 2, children: ['m', 'r'] });
  t.like(q.limits, { requestAlignment: 4096, maxTransfer: 65536, clusterSize: 0 });
  await q.read(10, Buffer.alloc(100));
  await q.write(4096, Buffer.alloc(3 * 65536, 1));
  t.deepEqual(control.calls, [
    { op: 'read', offset: 0, length: 4096 },
    { op: 'write', offset: 4096, length: 65536 },
    { op: 'write', offset: 69632, length: 65536 },
    { op: 'write', offset: 135168, length: 65536 },
  ]);
  await layer.close();
});

test('truncate is not supported (QEMU quorum has no truncate)', async (t) => {
  const f = await quorumFixture();
  await f.memory('a');
  const q = await f.quorum({ 'vote-threshold': 1, children: ['a'] });
  const error = await t.throwsAsync(q.truncate(SIZE * 2));
  t.like(error, { errno: 'ENOTSUP' });
  t.is(q.length, SIZE);
  await f.layer.close();
});

test('a quorum is named by a json: filename listing its children, as QEMU gathers them', async (t) => {
  const f = await quorumFixture();
  await f.memory('a');
  const q = await f.quorum({ 'vote-threshold': 1, children: ['a', { driver: 'memory', size: SIZE }], 'read-pattern': 'fifo' });
  t.is(
    await nodeFilename(q),
    `json:{"driver": "quorum", "vote-threshold": 1, "read-pattern": "fifo", "children": [{"driver": "memory", "size": ${SIZE}}, {"driver": "memory", "size": ${SIZE}}]}`,
  );
  await f.layer.close();
});
