/** The file driver without its native addon: same results, no holes reported, zeroes written as data. */
import test from 'ava';
import { fileFixture, filled, KiB, MiB, nodeMap, readNode, registerCoreTests, sameBytes, sectors, sparseFile } from './fixture.js';

// Before the driver module loads: it decides native or fallback once, at import.
process.env.BLOCKLAYER_NO_NATIVE = '1';
const { fileDriver } = await import('../../../drivers/file/driver.js');

registerCoreTests(fileDriver, 'fallback');

test('block status is data up to EOF, zeroes past it', async (t) => {
  const f = await fileFixture(t, fileDriver);
  await sparseFile(f.path('s.img'), 4 * MiB, [[MiB, 64 * KiB, 1]]);
  const node = await f.add(f.path('s.img'));
  t.deepEqual(await nodeMap(node), [{ offset: 0, length: 4 * MiB, data: true, zero: false }]);
  await node.truncate(5 * MiB);
  await node.truncate(4 * MiB + 512);
  t.deepEqual(await nodeMap(node), [{ offset: 0, length: 4 * MiB + 512, data: true, zero: false }]);
});

test('write-zeroes writes data, and fails with ENOTSUP when no fallback is allowed', async (t) => {
  const f = await fileFixture(t, fileDriver);
  await sparseFile(f.path('z.img'), 4 * MiB, [[0, 4 * MiB, 0x99]]);
  const node = await f.add(f.path('z.img'), { discard: 'unmap' });
  const before = await sectors(f.path('z.img'));
  await node.writeZeroes(0, MiB, { mayUnmap: true });
  t.is(await sectors(f.path('z.img')), before, 'nothing was deallocated');
  await t.throwsAsync(node.writeZeroes(MiB, MiB, { noFallback: true }), { message: 'Operation not supported' });
  sameBytes(t, await readNode(node, MiB, 4096), filled(4096, 0x99), 'a refused request changed nothing');
});

test('discard is accepted and does nothing', async (t) => {
  const f = await fileFixture(t, fileDriver);
  await sparseFile(f.path('d.img'), MiB, [[0, MiB, 0x5a]]);
  const node = await f.add(f.path('d.img'), { discard: 'unmap' });
  await node.discard(0, MiB);
  sameBytes(t, await readNode(node, 0, MiB), filled(MiB, 0x5a));
});
