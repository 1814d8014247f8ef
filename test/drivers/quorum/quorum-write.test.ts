/**
 * Writes, write-zeroes and flushes reach every child and need
 * `vote-threshold` successes; discard does nothing (QEMU's quorum has no
 * discard); block status reports zero only where every child does.
 */
import test from 'ava';
import { filled, quorumFixture, readBack, SIZE } from './quorum-fixture.js';

const K = 4096;

test('a write and a write-zeroes reach every child', async (t) => {
  const f = await quorumFixture();
  const children = await f.memory('a', 'b', 'c');
  const q = await f.quorum({ 'vote-threshold': 3, children: ['a', 'b', 'c'] });
  await q.write(0, filled(3 * K, 2));
  await q.writeZeroes(K, K);
  const expected = Buffer.concat([filled(K, 2), filled(K, 0), filled(K, 2)]);
  for (const child of children) t.deepEqual(await readBack(child, 0, 3 * K), expected, child.nodeName);
  t.deepEqual(f.events, []);
  await f.layer.close();
});

test('one child failing a write: reported, the write succeeds with the threshold met', async (t) => {
  const f = await quorumFixture();
  const [a, c] = await f.memory('a', 'c');
  const bad = await f.faulty('bad', 'write', 'ENOSPC');
  const q = await f.quorum({ 'vote-threshold': 2, children: ['a', 'bad', 'c'] });
  await q.write(K, filled(K, 3));
  for (const child of [a!, c!]) t.deepEqual(await readBack(child, K, K), filled(K, 3));
  t.deepEqual(await readBack(bad, K, K), filled(K, 0));
  t.deepEqual(f.events, [
    { event: 'QUORUM_REPORT_BAD', type: 'write', error: 'No space left on device', 'node-name': 'bad', 'sector-num': 8, 'sectors-count': 8 },
  ]);
  await f.layer.close();
});

test('fewer successes than the threshold: the most common error, and QUORUM_FAILURE', async (t) => {
  const f = await quorumFixture();
  const [a] = await f.memory('a');
  await f.faulty('b', 'write', 'EIO');
  await f.faulty('c', 'write', 'EIO');
  const q = await f.quorum({ 'vote-threshold': 2, children: ['a', 'b', 'c'] });
  await t.throwsAsync(q.write(0, filled(512, 1)), { message: 'Input/output error' });
  t.deepEqual(await readBack(a!, 0, 512), filled(512, 1), 'the child that could write did');
  t.deepEqual(
    f.events.map((e) => [e.event, e.type, e['node-name'] ?? e.reference]),
    [['QUORUM_REPORT_BAD', 'write', 'b'], ['QUORUM_REPORT_BAD', 'write', 'c'], ['QUORUM_FAILURE', undefined, 'q']],
  );
  await f.layer.close();
});

test('threshold 1: a write that one child takes succeeds', async (t) => {
  const f = await quorumFixture();
  await f.memory('a');
  await f.faulty('b', 'write');
  const q = await f.quorum({ 'vote-threshold': 1, children: ['b', 'a'] });
  await q.write(0, filled(512, 1));
  t.is(f.events.length, 1);
  await f.layer.close();
});

test('the quorum then reads around the child a failed write left behind', async (t) => {
  const f = await quorumFixture();
  await f.memory('a', 'c');
  await f.faulty('bad', 'write');
  const q = await f.quorum({ 'vote-threshold': 2, children: ['a', 'bad', 'c'] });
  await q.write(0, filled(K, 9));
  f.events.length = 0;
  t.deepEqual(await readBack(q, 0, K), filled(K, 9));
  t.like(f.events, [{ event: 'QUORUM_REPORT_BAD', type: 'read', 'node-name': 'bad' }]);
  await f.layer.close();
});

test('flush reaches every child; a failing flush is reported as type flush', async (t) => {
  const f = await quorumFixture();
  const [a, b] = await f.memory('a', 'b');
  const q = await f.quorum({ 'vote-threshold': 1, children: ['a', 'b'] });
  const flushed: string[] = [];
  for (const node of [a!, b!]) {
    const original = node.flush.bind(node);
    node.flush = async (...args) => {
      flushed.push(node.nodeName);
      if (node === b) throw new Error('flush failed');
      return original(...args);
    };
  }
  await q.flush();
  t.deepEqual(flushed.sort(), ['a', 'b'], 'each child once');
  t.deepEqual(f.events, [{ event: 'QUORUM_REPORT_BAD', type: 'flush', error: 'Input/output error', 'node-name': 'b', 'sector-num': 0, 'sectors-count': 0 }]);
  const strict = await f.layer.graph.add({ driver: 'quorum', 'node-name': 's', 'vote-threshold': 2, children: ['a', 'b'] });
  await t.throwsAsync(strict.flush(), { message: 'flush failed' });
  t.false(f.events.some((e) => e.event === 'QUORUM_FAILURE'), 'a failed flush is not a quorum failure');
  await f.layer.close();
});

test('discard does nothing: QEMU quorum has no discard', async (t) => {
  const f = await quorumFixture();
  const [a] = await f.memory('a', 'b');
  const q = await f.layer.graph.add({ driver: 'quorum', 'node-name': 'q', 'vote-threshold': 2, children: ['a', 'b'], discard: 'unmap' });
  await q.write(0, filled(K, 1));
  await q.discard(0, K);
  t.deepEqual(await readBack(a!, 0, K), filled(K, 1));
  await f.layer.close();
});

test('block status: zero where every child reads zeroes, data where any child has data', async (t) => {
  const f = await quorumFixture();
  const [a, b] = await f.memory('a', 'b');
  const q = await f.quorum({ 'vote-threshold': 1, children: ['a', 'b'] });
  await a!.write(64 * K, filled(64 * K, 1));
  await b!.write(96 * K, filled(64 * K, 1));
  t.deepEqual(await q.blockStatus(0, 256 * K), [
    { offset: 0, length: 64 * K, data: false, zero: true, allocated: true },
    { offset: 64 * K, length: 96 * K, data: true, zero: false, allocated: true },
    { offset: 160 * K, length: 96 * K, data: false, zero: true, allocated: true },
  ]);
  t.deepEqual(await q.blockStatus(SIZE - K, K), [{ offset: SIZE - K, length: K, data: false, zero: true, allocated: true }]);
  await f.layer.close();
});
