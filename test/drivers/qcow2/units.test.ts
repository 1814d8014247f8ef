/** The building blocks on their own: entry and refcount encodings, the table cache, the range lock, check's computed refcounts. */
import test from 'ava';
import { TableCache } from '../../../drivers/qcow2/qcow2-cache.js';
import { RefTable } from '../../../drivers/qcow2/qcow2-check-walk.js';
import {
  geometry,
  readL2Entry,
  readRefcount,
  refcountMax,
  sizeToL1,
  writeCompressedEntry,
  writeL2Entry,
  writeRefcount,
} from '../../../drivers/qcow2/qcow2-format.js';
import { RangeLock } from '../../../drivers/qcow2/qcow2-range-lock.js';

test('refcounts narrower than a byte are packed least significant bit first; wider ones are big-endian', (t) => {
  const block = Buffer.alloc(16);
  writeRefcount(block, 0, 1, 1);
  writeRefcount(block, 1, 1, 1);
  writeRefcount(block, 2, 1, 1);
  writeRefcount(block, 3, 1, 1);
  t.is(block[0], 0x55, '2-bit refcounts: byte 0x55 is clusters 0..3 = 1');
  block.fill(0);
  writeRefcount(block, 0, 2, 1);
  writeRefcount(block, 1, 2, 1);
  t.is(block[0], 0x11, '4-bit refcounts: low nibble first');
  for (let order = 0; order <= 6; order++) {
    const b = Buffer.alloc(64);
    const max = refcountMax(order);
    for (let i = 0; i < 8; i++) writeRefcount(b, i, order, (i * 7) % (max + 1));
    for (let i = 0; i < 8; i++) t.is(readRefcount(b, i, order), (i * 7) % (max + 1), `order ${order}, entry ${i}`);
  }
  const wide = Buffer.alloc(16);
  writeRefcount(wide, 1, 6, 2 ** 40 + 3);
  t.is(wide.readBigUInt64BE(8), 2n ** 40n + 3n);
});

test('L2 entries: standard, zero and compressed descriptors decode as QEMU classifies them', (t) => {
  const g = geometry(16, 4);
  const buf = Buffer.alloc(8);
  writeL2Entry(buf, 0, 0x50000, true, false);
  t.is(buf.readBigUInt64BE(0), 0x8000000000050000n);
  t.like(readL2Entry(buf, 0, g, 3), { kind: 'normal', host: 0x50000, copied: true, invalid: false });
  writeL2Entry(buf, 0, 0x10000, true, true);
  t.like(readL2Entry(buf, 0, g, 3), { kind: 'zero-alloc', host: 0x10000 });
  writeL2Entry(buf, 0, 0, false, true);
  t.is(buf.readBigUInt64BE(0), 1n);
  t.like(readL2Entry(buf, 0, g, 3), { kind: 'zero-plain' });
  t.like(readL2Entry(buf, 0, g, 2), { kind: 'unallocated', invalid: true }, 'v2 has no zero flag');
  writeCompressedEntry(buf, 0, 0x500ce, 300, g);
  t.like(readL2Entry(buf, 0, g, 3), { kind: 'compressed', host: 0x500ce, copied: false, compressedLength: 512 - 0xce });
  writeCompressedEntry(buf, 0, 0x501f0, 300, g);
  t.like(readL2Entry(buf, 0, g, 3), { kind: 'compressed', host: 0x501f0, compressedLength: 1024 - 0x1f0 });
  t.is(sizeToL1(2n ** 30n, 16), 2n);
  t.is(sizeToL1(64n * 2n ** 20n, 9), 2048n);
});

test('the table cache evicts the least recently used entry, writing it back first when dirty', async (t) => {
  const written: number[] = [];
  const cache = new TableCache(2, 8, {
    load: async (offset, buf) => void buf.fill(offset & 0xff),
    writeBack: async (offset) => void written.push(offset),
  });
  await cache.get(1);
  await cache.get(2);
  (await cache.get(1))[0] = 9;
  cache.markDirty(1);
  await cache.get(3);
  t.deepEqual(written, [], 'entry 2 was the least recently used, and clean');
  await cache.get(4);
  t.deepEqual(written, [1]);
  t.is(cache.size, 2);
  cache.cleanUnused();
  (await cache.get(4))[1] = 1;
  cache.markDirty(4);
  cache.cleanUnused();
  t.deepEqual(cache.dirty().map(([o]) => o), [4], 'dirty entries are never dropped');
});

test('the table cache keeps its use order when the same entry is used again and again, or the newest is dropped', async (t) => {
  const loaded: number[] = [];
  const cache = new TableCache(2, 8, {
    load: async (offset) => void loaded.push(offset),
    writeBack: async () => undefined,
  });
  await cache.get(1);
  await cache.get(2);
  cache.peek(1);
  cache.peek(1);
  cache.peek(2);
  await cache.get(3);
  t.is(cache.peek(1), undefined, '1 was used before 2 last, so it went first');
  t.not(cache.peek(2), undefined);
  cache.dropRange(3, 4);
  await cache.get(5);
  await cache.get(3);
  t.is(cache.peek(2), undefined, 'after 3 was dropped, 2 was the least recently used');
  t.deepEqual(loaded, [1, 2, 3, 5, 3]);
});

test('the range lock lets readers share, and writers wait for earlier overlapping holders only', async (t) => {
  const lock = new RangeLock();
  const order: string[] = [];
  const r1 = await lock.acquire(0, 10, false);
  const r2 = await lock.acquire(5, 15, false);
  const w = lock.acquire(8, 9, true).then((release) => {
    order.push('w');
    return release;
  });
  const other = await lock.acquire(20, 30, true);
  order.push('other');
  r1();
  await new Promise((resolve) => setImmediate(resolve));
  t.deepEqual(order, ['other']);
  r2();
  (await w)();
  other();
  t.deepEqual(order, ['other', 'w']);
});

test("check's computed refcounts: pages made on the first count, found again across page boundaries, as wide as the image's", (t) => {
  const table = new RefTable(200_000, 4);
  t.is(table.nextCounted(0, 200_000), 200_000, 'nothing counted yet');
  table.set(65_535, 2);
  table.set(65_536, 1);
  table.set(190_000, 65_535);
  table.set(100_000, 0);
  t.deepEqual([table.get(65_535), table.get(65_536), table.get(190_000), table.get(100_000), table.get(5)], [2, 1, 65_535, 0, 0]);
  t.is(table.nextCounted(0, 200_000), 65_535);
  t.is(table.nextCounted(65_536, 200_000), 65_536);
  t.is(table.nextCounted(65_537, 200_000), 190_000, 'the empty page between is skipped');
  t.is(table.nextCounted(65_537, 150_000), 150_000, 'none before the end asked for');
  t.is(table.get(250_000), 0, 'past the size');
  table.set(250_000, 1);
  t.is(table.size, 250_001, 'a count past the size grows the table');
  t.is(table.nextCounted(190_001, 300_000), 250_000);
  t.is(table.nextCounted(250_001, 300_000), 300_000, 'the end asked for, also past the size');
  const narrow = new RefTable(10, 0);
  narrow.set(3, 1);
  t.is(narrow.get(3), 1);
  table.clear();
  t.is(table.nextCounted(0, 300_000), 300_000, 'cleared');
});
