import test from 'ava';
import { createTestLayer } from '../../../core/testing/index.js';

const layer = () => createTestLayer({ plugins: ['null-co'] });

test('reads zeroes whatever was written; size defaults to 1 GiB', async (t) => {
  const l = await layer();
  const node = await l.graph.add({ driver: 'null-co', 'node-name': 'n' });
  t.is(node.length, 1 << 30);
  await node.write(0, Buffer.alloc(4096, 1));
  const back = Buffer.alloc(4096, 0xee);
  await node.read(0, back);
  t.true(back.every((b) => b === 0));
  t.deepEqual(await node.blockStatus(0, 8192), [{ offset: 0, length: 8192, data: false, zero: true, allocated: true }]);
});

test('read-zeroes off leaves the buffer untouched and reports no zero status', async (t) => {
  const l = await layer();
  const node = await l.graph.add({ driver: 'null-co', 'node-name': 'n', size: 65536, 'read-zeroes': false });
  const back = Buffer.alloc(16, 0xee);
  await node.read(0, back);
  t.true(back.every((b) => b === 0xee));
  t.deepEqual(await node.blockStatus(0, 512), [{ offset: 0, length: 512, data: false, zero: false, allocated: true }]);
});

test('latency-ns delays requests', async (t) => {
  const l = await layer();
  const node = await l.graph.add({ driver: 'null-co', 'node-name': 'n', 'latency-ns': 30_000_000 });
  const start = process.hrtime.bigint();
  await node.read(0, Buffer.alloc(1));
  t.true(process.hrtime.bigint() - start >= 25_000_000n);
});

test('options are checked with QEMU messages', async (t) => {
  const l = await layer();
  await t.throwsAsync(l.graph.add({ driver: 'null-co', 'node-name': 'n', size: 'x' }), {
    message: "Invalid parameter type for 'size', expected: integer",
  });
  await t.throwsAsync(l.graph.add({ driver: 'null-co', 'node-name': 'n', size: -1 }), {
    message: "Parameter 'size' expects a non-negative number below 2^64",
  });
  await t.throwsAsync(l.graph.add({ driver: 'null-co', 'node-name': 'n', speed: 1 }), { message: "Parameter 'speed' is unexpected" });
});
