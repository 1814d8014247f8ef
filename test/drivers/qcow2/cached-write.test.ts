/**
 * Writes of new data without the metadata lock (qcow2-cached-write.ts)
 * must lay the image out as the locked way and QEMU do: the same writes
 * made by qemu-io give the same map, host offsets included. The writes mix
 * the cached way (sequential 4 KiB and 2 MiB writes of new data) with the
 * locked way (the first write, a write across two L2 tables that allocates
 * a table, a rewrite in place), and concurrent writes with flushes, which
 * hold the lock while new data arrives.
 */
import test from 'ava';
import { assertClean, KiB, MiB, qcow2Fixture, qemuMap, readNode, requireQemu, run, sameBytes } from './fixture.js';

const TABLE = 512 * MiB;

/** [offset, length, pattern] of each write, in order. */
const WRITES: [number, number, number][] = [
  ...Array.from({ length: 64 }, (_, i): [number, number, number] => [i * 4 * KiB, 4 * KiB, 0x10 + (i % 8)]),
  [4 * MiB, 2 * MiB, 0x21],
  [TABLE - 64 * KiB, 128 * KiB, 0x22],
  ...Array.from({ length: 40 }, (_, i): [number, number, number] => [TABLE + 128 * KiB + i * 4 * KiB, 4 * KiB, 0x30 + (i % 8)]),
  [8 * KiB, 4 * KiB, 0x40],
];

test('new data written without the lock lands where qemu-io puts the same writes; the image is clean', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const ours = f.path('ours.qcow2');
  const theirs = f.path('theirs.qcow2');
  await f.create({ filename: ours, size: 1024 * MiB });
  await run('qemu-img', ['create', '-f', 'qcow2', theirs, '1G']);
  const node = await f.open(ours);
  for (const [offset, length, pattern] of WRITES) await node.write(offset, Buffer.alloc(length, pattern));
  await f.close();
  await run('qemu-io', ['-f', 'qcow2', ...WRITES.flatMap(([offset, length, pattern]) => ['-c', `write -P ${pattern} ${offset} ${length}`]), theirs]);
  t.deepEqual(await qemuMap(ours), await qemuMap(theirs), 'same layout, host offsets included');
  await assertClean(t, ours);
  t.regex(await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', ours, theirs]), /Images are identical/);
});

test('new data written while flushes hold the lock reads back whole, and the image is clean', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const path = f.path('busy.qcow2');
  await f.create({ filename: path, size: 64 * MiB });
  const node = await f.open(path);
  const expected = Buffer.alloc(8 * MiB);
  const writes: Promise<void>[] = [];
  for (let i = 0; i < 256; i++) {
    const offset = ((i * 37) % 256) * 32 * KiB;
    const data = Buffer.alloc(32 * KiB, i + 1);
    data.copy(expected, offset);
    writes.push(node.write(offset, data));
    if (i % 16 === 0) writes.push(node.flush());
  }
  await Promise.all(writes);
  sameBytes(t, await readNode(node, 0, 8 * MiB), expected);
  await f.close();
  await assertClean(t, path);
});
