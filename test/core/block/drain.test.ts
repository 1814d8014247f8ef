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
  const drain = node.drainedBegin().then(() => (drained = true));
  await tick();
  t.false(drained, 'drain must not complete while a write is in flight');
  control.release();
  await write;
  await drain;
  t.true(drained);
  t.is(node.requests.size, 0);
  node.drainedEnd();
});

test('a drained node holds new requests until the drained section ends', async (t) => {
  const { control, node } = await setup();
  await node.drainedBegin();
  let done = false;
  const write = node.write(0, Buffer.alloc(512, 9)).then(() => (done = true));
  await tick();
  t.false(done);
  t.deepEqual(control.calls, [], 'the held request did not reach the driver');
  node.drainedEnd();
  await write;
  t.true(done);
  t.deepEqual(control.calls, [{ op: 'write', offset: 0, length: 512 }]);
});

test('drain of a child holds requests from its parents too', async (t) => {
  const { layer, node } = await setup();
  const raw = await layer.graph.add({ driver: 'raw', 'node-name': 'top', file: 'rec' });
  await node.drainedBegin();
  t.true(raw.quiesced, 'the parent is quiesced with the child');
  let done = false;
  const write = raw.write(0, Buffer.alloc(512)).then(() => (done = true));
  await tick();
  t.false(done);
  node.drainedEnd();
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
  const drain = node.drainedBegin();
  control.release();
  await write;
  await drain;
  t.is(raw.requests.size, 0);
  node.drainedEnd();
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
