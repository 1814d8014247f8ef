import test from 'ava';
import type { WriteRequest } from '../../../core/block/request.js';
import { BlockIoError } from '../../../core/errors.js';
import { createTestLayer } from '../../../core/testing/index.js';

async function memoryNode(size = 1 << 20) {
  const layer = await createTestLayer();
  const node = await layer.graph.add({ driver: 'memory', 'node-name': 'm', size });
  return { layer, node };
}

test('a vetoing beforeWrite tap fails exactly the vetoed write', async (t) => {
  const { node } = await memoryNode();
  const veto = new Error('vetoed by test');
  node.hooks.beforeWrite.tapPromise('test', async (request) => (request.offset === 4096 ? veto : undefined));
  const results = await Promise.allSettled([
    node.write(0, Buffer.alloc(4096, 1)),
    node.write(4096, Buffer.alloc(4096, 2)),
    node.write(8192, Buffer.alloc(4096, 3)),
  ]);
  t.is(results[0].status, 'fulfilled');
  t.deepEqual(results[1], { status: 'rejected', reason: veto });
  t.is(results[2].status, 'fulfilled');
  const back = Buffer.alloc(12288);
  await node.read(0, back);
  t.true(back.subarray(0, 4096).every((b) => b === 1));
  t.true(back.subarray(4096, 8192).every((b) => b === 0), 'the vetoed data never reached the driver');
  t.true(back.subarray(8192).every((b) => b === 3));
});

test('a beforeWrite tap can delay a write until it is done', async (t) => {
  const { node } = await memoryNode();
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  node.hooks.beforeWrite.tapPromise('delay', async () => {
    await released;
    return undefined;
  });
  const write = node.write(0, Buffer.alloc(512, 7));
  await new Promise((resolve) => setTimeout(resolve, 20));
  const before = Buffer.alloc(512);
  await node.read(0, before);
  t.true(before.every((b) => b === 0), 'data not written while the tap holds it');
  release();
  await write;
  const after = Buffer.alloc(512);
  await node.read(0, after);
  t.true(after.every((b) => b === 7));
});

test('every write-type request passes both hooks with its kind and range', async (t) => {
  const { node } = await memoryNode(65536);
  const before: string[] = [];
  const after: string[] = [];
  const describe = (r: WriteRequest) => `${r.kind}@${r.offset}+${r.bytes}`;
  node.hooks.beforeWrite.tapPromise('log', async (r) => {
    before.push(describe(r));
    return undefined;
  });
  node.hooks.afterWrite.tapPromise('log', async (r, result) => {
    after.push(`${describe(r)}${result.error ? ' failed' : ''}`);
  });
  await node.write(0, Buffer.alloc(100, 1));
  await node.writeZeroes(100, 50);
  await node.truncate(32768);
  await node.truncate(65536);
  const expected = ['write@0+100', 'write-zeroes@100+50', 'truncate@32768+32768', 'truncate@65536+0'];
  t.deepEqual(before, expected);
  t.deepEqual(after, expected);
});

test('discard reaches the hooks only when the node passes discards down', async (t) => {
  const layer = await createTestLayer();
  const ignoring = await layer.graph.add({ driver: 'memory', 'node-name': 'a', size: 65536 });
  const unmapping = await layer.graph.add({ driver: 'memory', 'node-name': 'b', size: 65536, discard: 'unmap' });
  const seen: string[] = [];
  for (const node of [ignoring, unmapping]) {
    node.hooks.beforeWrite.tapPromise('log', async (r) => {
      seen.push(`${r.node.nodeName}:${r.kind}`);
      return undefined;
    });
  }
  await ignoring.discard(0, 4096);
  await unmapping.discard(0, 4096);
  t.deepEqual(seen, ['b:discard']);
});

test('without taps the hooks are not used at all', async (t) => {
  const { node } = await memoryNode();
  t.false(node.hooks.beforeWrite.isUsed());
  t.false(node.hooks.afterWrite.isUsed());
  await node.write(0, Buffer.alloc(10));
  t.pass();
});

test('afterWrite reports a failed write', async (t) => {
  const layer = await createTestLayer();
  await layer.graph.add({ driver: 'memory', 'node-name': 'base', size: 4096, 'read-only': true });
  const results: (Error | undefined)[] = [];
  const base = layer.graph.node('base')!;
  base.hooks.afterWrite.tapPromise('log', async (_r, result) => {
    results.push(result.error);
  });
  const error = await t.throwsAsync(base.write(0, Buffer.alloc(1)));
  t.true(error instanceof BlockIoError);
  t.is(error?.message, "Block node 'base' is read-only");
  t.deepEqual(results, [], 'a request refused at the seam never reaches the hooks');
});
