import test from 'ava';
import { createTestLayer } from '../../../core/testing/index.js';
import { RecordingControl, recordingPlugin } from '../../helpers/recording-driver.js';

async function setup() {
  const control = new RecordingControl();
  const layer = await createTestLayer({ plugins: ['raw', recordingPlugin(control)] });
  const node = await layer.graph.add({ driver: 'recording', 'node-name': 'rec', size: 1 << 20 });
  return { control, layer, node };
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 10));

test('drain waits for in-flight requests to finish', async (t) => {
  const { control, node } = await setup();
  control.hold();
  const started = control.nextWriteStarted();
  const write = node.write(0, Buffer.alloc(4096, 1));
  await started;
  let drained = false;
  const drain = node.drain().then((section) => {
    drained = true;
    return section;
  });
  await tick();
  t.false(drained, 'drain must not complete while a write is in flight');
  control.release();
  await write;
  const section = await drain;
  t.true(drained);
  t.is(node.requests.size, 0);
  section.end();
});

test('a drained node holds new requests until the drained section ends', async (t) => {
  const { control, node } = await setup();
  const section = await node.drain();
  let done = false;
  const write = node.write(0, Buffer.alloc(512, 9)).then(() => (done = true));
  await tick();
  t.false(done);
  t.deepEqual(control.calls, [], 'the held request did not reach the driver');
  section.end();
  await write;
  t.true(done);
  t.deepEqual(control.calls, [{ op: 'write', offset: 0, length: 512 }]);
});

test('drain of a child holds requests from its parents too', async (t) => {
  const { layer, node } = await setup();
  const raw = await layer.graph.add({ driver: 'raw', 'node-name': 'top', file: 'rec' });
  const section = await node.drain();
  t.true(raw.quiesced, 'the parent is quiesced with the child');
  let done = false;
  const write = raw.write(0, Buffer.alloc(512)).then(() => (done = true));
  await tick();
  t.false(done);
  section.end();
  await write;
  t.false(raw.quiesced);
});

test("a parent's in-flight request completes through a drained child", async (t) => {
  const { control, layer, node } = await setup();
  const raw = await layer.graph.add({ driver: 'raw', 'node-name': 'top', file: 'rec' });
  control.hold();
  const started = control.nextWriteStarted();
  const write = raw.write(0, Buffer.alloc(512, 3));
  await started;
  const drain = node.drain();
  control.release();
  await write;
  const section = await drain;
  t.is(raw.requests.size, 0);
  section.end();
});

test('drained() brackets a section and resumes held requests afterwards', async (t) => {
  const { node } = await setup();
  const order: string[] = [];
  let write: Promise<unknown> | undefined;
  await node.drained(async () => {
    write = node.write(0, Buffer.alloc(1)).then(() => order.push('write'));
    await tick();
    order.push('section');
  });
  await write;
  t.deepEqual(order, ['section', 'write']);
});

test('drainBegin and drainEnd hooks fire on the node and its parents', async (t) => {
  const { layer, node } = await setup();
  await layer.graph.add({ driver: 'raw', 'node-name': 'top', file: 'rec' });
  const events: string[] = [];
  for (const n of layer.graph.list()) {
    n.hooks.drainBegin.tap('test', (x) => events.push(`begin ${x.nodeName}`));
    n.hooks.drainEnd.tap('test', (x) => events.push(`end ${x.nodeName}`));
  }
  await node.drained(async () => undefined);
  t.deepEqual(events.sort(), ['begin rec', 'begin top', 'end rec', 'end top']);
});

test('a node attached above a drained node is drained until the section ends', async (t) => {
  const { layer, node } = await setup();
  const section = await node.drain();
  const raw = await layer.graph.add({ driver: 'raw', 'node-name': 'late', file: 'rec' });
  t.true(raw.quiesced);
  section.end();
  t.false(raw.quiesced);
  t.false(node.quiesced);
});

test('a user attached to a drained node is paused with it and released at the end', async (t) => {
  const { layer, node } = await setup();
  const log: string[] = [];
  const user = {
    parentName: 'u',
    parentKind: 'job' as const,
    drainedBegin: () => log.push('begin'),
    drainedEnd: () => log.push('end'),
    drainedPoll: async () => undefined,
  };
  const section = await node.drain();
  const edge = layer.graph.attach(user, node, 'job');
  t.deepEqual(log, ['begin']);
  section.end();
  t.deepEqual(log, ['begin', 'end']);
  const second = await node.drain();
  layer.graph.detach(edge);
  t.deepEqual(log, ['begin', 'end', 'begin', 'end'], 'detaching inside a section releases the user');
  second.end();
  t.is(log.length, 4);
});
