import test from 'ava';
import { createTestLayer } from '../../../core/testing/index.js';
import { RecordingControl, recordingPlugin } from '../../helpers/recording-driver.js';

async function setup(options: Record<string, unknown>) {
  const control = new RecordingControl();
  const layer = await createTestLayer({ plugins: [recordingPlugin(control)] });
  const node = await layer.graph.add({ driver: 'recording', 'node-name': 'rec', size: 1 << 20, ...options });
  return { control, node };
}

test('requests longer than maxTransfer reach the driver in pieces', async (t) => {
  const { control, node } = await setup({ 'max-transfer': 4096 });
  await node.read(0, Buffer.alloc(10000));
  t.deepEqual(
    control.calls.map((c) => c.length),
    [4096, 4096, 1808],
  );
  t.true(control.calls.every((c) => c.op === 'read'));
});

test('unaligned reads are served from aligned driver reads', async (t) => {
  const { control, node } = await setup({ align: 512 });
  const pattern = Buffer.alloc(2048);
  for (let i = 0; i < pattern.length; i++) pattern[i] = i % 251;
  await node.write(0, pattern);
  control.calls.length = 0;
  const part = Buffer.alloc(700);
  await node.read(300, part);
  t.deepEqual(part, pattern.subarray(300, 1000));
  t.deepEqual(control.calls, [{ op: 'read', offset: 0, length: 1024 }]);
});

test('unaligned writes become read-modify-write of whole blocks', async (t) => {
  const { control, node } = await setup({ align: 512 });
  await node.write(0, Buffer.alloc(1024, 0xaa));
  control.calls.length = 0;
  await node.write(100, Buffer.alloc(10, 0x55));
  t.deepEqual(control.calls, [
    { op: 'read', offset: 0, length: 512 },
    { op: 'write', offset: 0, length: 512 },
  ]);
  const back = Buffer.alloc(1024);
  await node.read(0, back);
  t.true(back.subarray(0, 100).every((b) => b === 0xaa));
  t.true(back.subarray(100, 110).every((b) => b === 0x55));
  t.true(back.subarray(110).every((b) => b === 0xaa));
});

test('concurrent unaligned writes into the same block do not lose each other', async (t) => {
  const { node } = await setup({ align: 4096 });
  await Promise.all(Array.from({ length: 64 }, (_, i) => node.write(i * 64, Buffer.alloc(64, i + 1))));
  const back = Buffer.alloc(4096);
  await node.read(0, back);
  for (let i = 0; i < 64; i++) t.true(back.subarray(i * 64, i * 64 + 64).every((b) => b === i + 1), `slice ${i}`);
});

test('write-zeroes is emulated with writes when the driver has none', async (t) => {
  const { control, node } = await setup({ 'max-transfer': 65536 });
  await node.write(0, Buffer.alloc(200000, 1));
  control.calls.length = 0;
  await node.writeZeroes(1000, 150000);
  t.true(control.calls.every((c) => c.op === 'write' && c.length <= 65536));
  const back = Buffer.alloc(200000);
  await node.read(0, back);
  t.true(back.subarray(0, 1000).every((b) => b === 1));
  t.true(back.subarray(1000, 151000).every((b) => b === 0));
  t.true(back.subarray(151000).every((b) => b === 1));
});

test('write-zeroes with noFallback fails with ENOTSUP when the driver cannot zero', async (t) => {
  const { node } = await setup({});
  const error = await t.throwsAsync(node.writeZeroes(0, 4096, { noFallback: true }));
  t.is((error as { errno?: string }).errno, 'ENOTSUP');
});

test('requests beyond the end fail with an error naming the node', async (t) => {
  const { node } = await setup({});
  const error = await t.throwsAsync(node.read((1 << 20) - 10, Buffer.alloc(20)));
  t.is(error?.message, "Request 1048566+20 is beyond the end of node 'rec' (1048576 bytes)");
  t.is((error as { errno?: string }).errno, 'EIO');
});

test('detect-zeroes turns writes of zeroes into write-zeroes', async (t) => {
  const layer = await createTestLayer();
  const plain = await layer.graph.add({ driver: 'memory', 'node-name': 'plain', size: 1 << 20 });
  const detecting = await layer.graph.add({ driver: 'memory', 'node-name': 'det', size: 1 << 20, 'detect-zeroes': 'on' });
  for (const node of [plain, detecting]) await node.write(0, Buffer.alloc(65536));
  t.true((await plain.blockStatus(0, 65536))[0]!.data, 'a plain zero write stores data');
  t.deepEqual(await detecting.blockStatus(0, 65536), [{ offset: 0, length: 65536, data: false, zero: true, allocated: true }]);
});
