/**
 * Reads: the vote (majority wins, threshold not reached fails with EIO and
 * QUORUM_FAILURE, losers and failing children reported), ties as QEMU
 * breaks them, rewrite-corrupted, blkverify, and read-pattern=fifo.
 */
import test from 'ava';
import { filled, quorumFixture, readBack, SIZE } from './quorum-fixture.js';

const K = 4096;

test('all children agree: the data, no event', async (t) => {
  const f = await quorumFixture();
  await f.memory('a', 'b', 'c');
  const q = await f.quorum({ 'vote-threshold': 2, children: ['a', 'b', 'c'] });
  await q.write(K, filled(K, 7));
  t.deepEqual(await readBack(q, K, K), filled(K, 7));
  t.deepEqual(f.events, []);
  await f.layer.close();
});

test('a corrupted child is outvoted and reported (QUORUM_REPORT_BAD without error)', async (t) => {
  const f = await quorumFixture();
  const [, b] = await f.memory('a', 'b', 'c');
  const q = await f.quorum({ 'vote-threshold': 2, children: ['a', 'b', 'c'] });
  await q.write(0, filled(2 * K, 1));
  await b!.write(K + 100, filled(10, 9));
  t.deepEqual(await readBack(q, 1000, 2 * K - 1000), filled(2 * K - 1000, 1));
  t.deepEqual(f.events, [{ event: 'QUORUM_REPORT_BAD', type: 'read', 'node-name': 'b', 'sector-num': 1, 'sectors-count': 15 }]);
  t.deepEqual(await readBack(b!, K + 100, 10), filled(10, 9), 'without rewrite-corrupted the child stays as it is');
  await f.layer.close();
});

test('no version reaches the threshold: EIO and QUORUM_FAILURE naming the quorum', async (t) => {
  const f = await quorumFixture();
  const [a, b, c] = await f.memory('a', 'b', 'c');
  const q = await f.quorum({ 'vote-threshold': 2, children: ['a', 'b', 'c'] });
  await a!.write(0, filled(512, 1));
  await b!.write(0, filled(512, 2));
  await c!.write(0, filled(512, 3));
  const error = await t.throwsAsync(readBack(q, 0, 512));
  t.is(error?.message, 'Input/output error');
  t.deepEqual(f.events, [{ event: 'QUORUM_FAILURE', reference: 'q', 'sector-num': 0, 'sectors-count': 1 }]);
  await f.layer.close();
});

test('QUORUM_FAILURE names the device when the quorum has one', async (t) => {
  const f = await quorumFixture();
  const [a, b] = await f.memory('a', 'b');
  await f.quorum({ 'vote-threshold': 2, children: ['a', 'b'] });
  await a!.write(0, filled(512, 1));
  await b!.write(0, filled(512, 2));
  const backend = f.layer.graph.attachBackend('drive0', 'q');
  await t.throwsAsync(backend.edge.read(0, Buffer.alloc(512)));
  t.like(f.events[0], { event: 'QUORUM_FAILURE', reference: 'drive0' });
  await f.layer.close();
});

test('a failing child is reported with its error; the others still make the quorum', async (t) => {
  const f = await quorumFixture();
  await f.memory('a', 'c');
  await f.faulty('bad', 'read', 'ENOSPC');
  const q = await f.quorum({ 'vote-threshold': 2, children: ['a', 'bad', 'c'] });
  await q.write(0, filled(K, 5));
  t.deepEqual(await readBack(q, 0, K), filled(K, 5));
  t.deepEqual(f.events, [
    { event: 'QUORUM_REPORT_BAD', type: 'read', error: 'No space left on device', 'node-name': 'bad', 'sector-num': 0, 'sectors-count': 8 },
  ]);
  await f.layer.close();
});

test('too few children read: the error most of them returned, and QUORUM_FAILURE', async (t) => {
  const f = await quorumFixture();
  await f.memory('a');
  await f.faulty('b', 'read', 'ENOSPC');
  await f.faulty('c', 'read', 'ENOSPC');
  await f.faulty('d', 'read', 'EIO');
  const q = await f.quorum({ 'vote-threshold': 2, children: ['a', 'b', 'c', 'd'] });
  const error = await t.throwsAsync(readBack(q, 0, 512));
  t.is(error?.message, 'No space left on device');
  t.deepEqual(
    f.events.map((e) => [e.event, e['node-name'] ?? e.reference]),
    [['QUORUM_REPORT_BAD', 'b'], ['QUORUM_REPORT_BAD', 'c'], ['QUORUM_REPORT_BAD', 'd'], ['QUORUM_FAILURE', 'q']],
  );
  await f.layer.close();
});

test('threshold 1, two versions of one vote each: the one seen last wins, as in QEMU', async (t) => {
  const f = await quorumFixture();
  const [a, b] = await f.memory('a', 'b');
  const q = await f.quorum({ 'vote-threshold': 1, children: ['a', 'b'] });
  await a!.write(0, filled(512, 1));
  await b!.write(0, filled(512, 2));
  t.deepEqual(await readBack(q, 0, 512), filled(512, 2));
  t.deepEqual(f.events.map((e) => e['node-name']), ['a']);
  await f.layer.close();
});

test('rewrite-corrupted writes the winning data over the children that lost', async (t) => {
  const f = await quorumFixture();
  const [a, b, c] = await f.memory('a', 'b', 'c');
  const q = await f.quorum({ 'vote-threshold': 2, children: ['a', 'b', 'c'], 'rewrite-corrupted': true });
  await q.write(0, filled(2 * K, 4));
  await c!.write(K, filled(K, 8));
  t.deepEqual(await readBack(q, 0, 2 * K), filled(2 * K, 4));
  for (const node of [a!, b!, c!]) t.deepEqual(await readBack(node, 0, 2 * K), filled(2 * K, 4), node.nodeName);
  t.is(f.events.length, 1, 'reported once');
  f.events.length = 0;
  await readBack(q, 0, 2 * K);
  t.deepEqual(f.events, [], 'repaired: the next read agrees');
  await f.layer.close();
});

test('rewrite-corrupted does not write when the read fails the quorum', async (t) => {
  const f = await quorumFixture();
  const [a, b, c] = await f.memory('a', 'b', 'c');
  const q = await f.quorum({ 'vote-threshold': 2, children: ['a', 'b', 'c'], 'rewrite-corrupted': true });
  await a!.write(0, filled(512, 1));
  await b!.write(0, filled(512, 2));
  await t.throwsAsync(readBack(q, 0, 512));
  t.deepEqual(await readBack(c!, 0, 512), filled(512, 0));
  await f.layer.close();
});

test('blkverify: equal copies read; a difference fails the read naming its first byte', async (t) => {
  const f = await quorumFixture();
  const [, b] = await f.memory('a', 'b');
  const q = await f.quorum({ 'vote-threshold': 2, children: ['a', 'b'], blkverify: true });
  await q.write(0, filled(K, 3));
  t.deepEqual(await readBack(q, 0, K), filled(K, 3));
  await b!.write(700, filled(1, 0));
  await t.throwsAsync(readBack(q, 512, 512), { message: 'quorum: offset=512 bytes=512 contents mismatch at offset 700' });
  await f.layer.close();
});

test('fifo reads the first child only, and the next one when it fails', async (t) => {
  const f = await quorumFixture();
  const [, b] = await f.memory('a', 'b');
  const q = await f.quorum({ 'vote-threshold': 1, children: ['a', 'b'], 'read-pattern': 'fifo' });
  await q.write(0, filled(K, 6));
  await b!.write(0, filled(K, 9));
  t.deepEqual(await readBack(q, 0, K), filled(K, 6), 'b differs, but is not read');
  t.deepEqual(f.events, []);

  await f.faulty('bad1', 'read');
  await f.faulty('bad2', 'read', 'ENOSPC');
  const fifo = await f.layer.graph.add({ driver: 'quorum', 'node-name': 'f', 'vote-threshold': 1, children: ['bad1', 'b'], 'read-pattern': 'fifo' });
  t.deepEqual(await readBack(fifo, 0, K), filled(K, 9));
  t.like(f.events, [{ event: 'QUORUM_REPORT_BAD', type: 'read', 'node-name': 'bad1', error: 'Input/output error' }]);
  const none = await f.layer.graph.add({ driver: 'quorum', 'node-name': 'n', 'vote-threshold': 1, children: ['bad1', 'bad2'], 'read-pattern': 'fifo' });
  await t.throwsAsync(readBack(none, 0, K), { message: 'No space left on device' }, 'the last error');
  await f.layer.close();
});

test('a read near the end covers the whole request in sectors', async (t) => {
  const f = await quorumFixture();
  const [, b] = await f.memory('a', 'b', 'c');
  const q = await f.quorum({ 'vote-threshold': 2, children: ['a', 'b', 'c'] });
  await b!.write(SIZE - 1, filled(1, 1));
  await readBack(q, SIZE - 1000, 1000);
  t.deepEqual(f.events, [{ event: 'QUORUM_REPORT_BAD', type: 'read', 'node-name': 'b', 'sector-num': 2046, 'sectors-count': 2 }]);
  await f.layer.close();
});
