import test from 'ava';
import { createTestLayer } from '../../../core/testing/index.js';

async function memory(size: number, extra: Record<string, unknown> = {}) {
  const layer = await createTestLayer();
  return layer.graph.add({ driver: 'memory', 'node-name': 'm', size, ...extra });
}

test('reads back what was written, zeroes elsewhere, across page boundaries', async (t) => {
  const node = await memory(1 << 20);
  const data = Buffer.alloc(100000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) % 256;
  await node.write(60000, data);
  const back = Buffer.alloc(200000);
  await node.read(0, back);
  t.true(back.subarray(0, 60000).every((b) => b === 0));
  t.deepEqual(back.subarray(60000, 160000), data);
  t.true(back.subarray(160000).every((b) => b === 0));
});

test('only written pages take memory; block status tells data from zeroes', async (t) => {
  const node = await memory(1 << 30);
  await node.write(65536 * 3 + 10, Buffer.alloc(10, 1));
  t.deepEqual(await node.blockStatus(0, 65536 * 5), [
    { offset: 0, length: 196608, data: false, zero: true, allocated: true },
    { offset: 196608, length: 65536, data: true, zero: false, allocated: true },
    { offset: 262144, length: 65536, data: false, zero: true, allocated: true },
  ]);
  const state = node.driverState as { pages: { allocatedBytes: number } };
  t.is(state.pages.allocatedBytes, 65536);
});

test('write-zeroes and discard free whole pages and clear partial ones', async (t) => {
  const node = await memory(1 << 20, { discard: 'unmap' });
  await node.write(0, Buffer.alloc(65536 * 3, 0xff));
  await node.writeZeroes(100, 65536 * 2);
  const back = Buffer.alloc(65536 * 3);
  await node.read(0, back);
  t.true(back.subarray(0, 100).every((b) => b === 0xff));
  t.true(back.subarray(100, 100 + 131072).every((b) => b === 0));
  t.true(back.subarray(100 + 131072).every((b) => b === 0xff));
  await node.discard(0, 65536 * 3);
  t.deepEqual(await node.blockStatus(0, 65536 * 3), [{ offset: 0, length: 196608, data: false, zero: true, allocated: true }]);
});

test('truncate grows with zeroes and shrinking drops data', async (t) => {
  const node = await memory(4096);
  await node.write(0, Buffer.alloc(4096, 9));
  await node.truncate(1000);
  t.is(node.length, 1000);
  await node.truncate(8192);
  const back = Buffer.alloc(8192);
  await node.read(0, back);
  t.true(back.subarray(0, 1000).every((b) => b === 9));
  t.true(back.subarray(1000).every((b) => b === 0), 'data beyond the shrunk end is gone');
});

test('size is required and must be a non-negative integer', async (t) => {
  const layer = await createTestLayer();
  await t.throwsAsync(layer.graph.add({ driver: 'memory', 'node-name': 'm' }), { message: "Parameter 'size' is missing" });
  await t.throwsAsync(layer.graph.add({ driver: 'memory', 'node-name': 'm', size: -1 }), {
    message: "Parameter 'size' expects a non-negative number below 2^64",
  });
});
