/** Holes with the native addon: block status, write-zeroes and discard, checked against qemu-img and qemu-io. */
import { copyFile, statfs } from 'node:fs/promises';
import test, { type ExecutionContext } from 'ava';
import type { BlockNode } from '../../../core/block/block-node.js';
import { type FileState, fileDriver } from '../../../drivers/file/driver.js';
import { requirePeer } from '../../helpers/peers.js';
import {
  fileFixture,
  filled,
  KiB,
  MiB,
  nodeMap,
  qemuMap,
  readNode,
  requireNative,
  run,
  sameBytes,
  sectors,
  sparseFile,
} from './fixture.js';

test('block status reports holes and data as qemu-img map does', async (t) => {
  if (!requireNative(t) || !requirePeer(t, 'qemu-img')) return;
  const f = await fileFixture(t, fileDriver);
  const path = f.path('s.img');
  await sparseFile(path, 8 * MiB, [[0, 64 * KiB, 1], [MiB, 128 * KiB, 2], [3 * MiB + 4 * KiB, 4 * KiB, 3], [8 * MiB - 4 * KiB, 4 * KiB, 4]]);
  const node = await f.add(path);
  const map = await nodeMap(node);
  t.deepEqual(map, await qemuMap(path));
  t.deepEqual(map.slice(0, 3), [
    { offset: 0, length: 64 * KiB, data: true, zero: false },
    { offset: 64 * KiB, length: MiB - 64 * KiB, data: false, zero: true },
    { offset: MiB, length: 128 * KiB, data: true, zero: false },
  ]);
  t.deepEqual(await node.blockStatus(MiB - 4 * KiB, 8 * KiB), [
    { offset: MiB - 4 * KiB, length: 4 * KiB, data: false, zero: true, allocated: true, hostOffset: MiB - 4 * KiB },
    { offset: MiB, length: 4 * KiB, data: true, zero: false, allocated: true, hostOffset: MiB },
  ]);
});

test('a trailing hole and a file grown by truncate read as zeroes', async (t) => {
  if (!requireNative(t) || !requirePeer(t, 'qemu-img')) return;
  const f = await fileFixture(t, fileDriver);
  const path = f.path('t.img');
  await sparseFile(path, 2 * MiB, [[0, 4 * KiB, 9]]);
  const node = await f.add(path);
  await node.truncate(6 * MiB);
  t.deepEqual(await nodeMap(node), [
    { offset: 0, length: 4 * KiB, data: true, zero: false },
    { offset: 4 * KiB, length: 6 * MiB - 4 * KiB, data: false, zero: true },
  ]);
  t.deepEqual(await nodeMap(node), await qemuMap(path));
});

/**
 * Runs the same zeroing on our node and, through qemu-io, on a copy; both
 * files must end up alike. Check contents afterwards: on ext4, reading an
 * unwritten extent puts pages in the cache and SEEK_DATA then calls it data.
 */
async function compareWithQemuIo(
  t: ExecutionContext,
  setup: (path: string) => Promise<void>,
  ours: (node: BlockNode) => Promise<void>,
  qemuCommands: string[],
  base?: string,
): Promise<{ node: BlockNode; ours: number }> {
  const f = await fileFixture(t, fileDriver, base);
  const [a, b] = [f.path('ours.img'), f.path('qemu.img')];
  await setup(a);
  await copyFile(a, b);
  const node = await f.add(a, { discard: 'unmap' });
  await ours(node);
  await node.flush();
  await run('qemu-io', ['-f', 'raw', '-d', 'unmap', ...qemuCommands.flatMap((c) => ['-c', c]), b]);
  t.deepEqual(await qemuMap(a), await qemuMap(b), 'same map as after qemu-io');
  t.is(await sectors(a), await sectors(b), 'same host allocation as after qemu-io');
  return { node, ours: await sectors(a) };
}

test('write-zeroes over holes: mayUnmap keeps the file sparse, plain zeroing allocates (as qemu-io write -z)', async (t) => {
  if (!requireNative(t) || !requirePeer(t, 'qemu-io') || !requirePeer(t, 'qemu-img')) return;
  const result = await compareWithQemuIo(
    t,
    (path) => sparseFile(path, 4 * MiB),
    async (node) => {
      await node.writeZeroes(0, 4 * MiB, { mayUnmap: true });
      t.is((await node.driver.describe!(node.driverState)).actualSize, 0, 'still fully sparse');
      await node.writeZeroes(0, MiB);
    },
    ['write -z -u 0 4M', 'write -z 0 1M'],
  );
  t.true(result.ours >= (MiB / 512), 'ZERO_RANGE allocated the first MiB');
});

test('write-zeroes over data: mayUnmap deallocates, plain zeroing keeps the blocks (as qemu-io write -z)', async (t) => {
  if (!requireNative(t) || !requirePeer(t, 'qemu-io') || !requirePeer(t, 'qemu-img')) return;
  let full = 0;
  const result = await compareWithQemuIo(
    t,
    async (path) => {
      await sparseFile(path, 4 * MiB, [[0, 4 * MiB, 0xaa]]);
      full = await sectors(path);
    },
    async (node) => {
      await node.writeZeroes(0, MiB, { mayUnmap: true });
      await node.writeZeroes(MiB, MiB);
    },
    ['write -z -u 0 1M', 'write -z 1M 1M'],
  );
  t.is(result.ours, full - MiB / 512, 'only the unmapped MiB was released');
  sameBytes(t, await readNode(result.node, 0, 2 * MiB), filled(2 * MiB, 0));
  sameBytes(t, await readNode(result.node, 2 * MiB, 2 * MiB), filled(2 * MiB, 0xaa));
});

test('discard punches holes (as qemu-io discard); without discard=unmap it is ignored', async (t) => {
  if (!requireNative(t) || !requirePeer(t, 'qemu-io') || !requirePeer(t, 'qemu-img')) return;
  let full = 0;
  const result = await compareWithQemuIo(
    t,
    async (path) => {
      await sparseFile(path, 2 * MiB, [[0, 2 * MiB, 0x3c]]);
      full = await sectors(path);
    },
    async (node) => {
      await node.discard(64 * KiB, 512 * KiB);
      t.deepEqual((await nodeMap(node))[1], { offset: 64 * KiB, length: 512 * KiB, data: false, zero: true });
    },
    ['discard 64k 512k'],
  );
  t.is(result.ours, full - (512 * KiB) / 512);
  sameBytes(t, await readNode(result.node, 64 * KiB, 512 * KiB), filled(512 * KiB, 0));

  const f = await fileFixture(t, fileDriver);
  await sparseFile(f.path('i.img'), MiB, [[0, MiB, 0x3c]]);
  const ignoring = await f.add(f.path('i.img'));
  await ignoring.discard(0, MiB);
  sameBytes(t, await readNode(ignoring, 0, MiB), filled(MiB, 0x3c));
});

test('write-zeroes with noFallback succeeds where the file system can zero', async (t) => {
  if (!requireNative(t)) return;
  const f = await fileFixture(t, fileDriver);
  await sparseFile(f.path('n.img'), MiB, [[0, MiB, 0x10]]);
  const node = await f.add(f.path('n.img'));
  await node.writeZeroes(4 * KiB, 64 * KiB, { noFallback: true });
  sameBytes(t, await readNode(node, 4 * KiB, 64 * KiB), filled(64 * KiB, 0));
});

const TMPFS_MAGIC = 0x01021994;

test('on tmpfs, which has no ZERO_RANGE, write-zeroes punches and re-allocates (as qemu-io write -z)', async (t) => {
  if (!requireNative(t) || !requirePeer(t, 'qemu-io') || !requirePeer(t, 'qemu-img')) return;
  const isTmpfs = await statfs('/dev/shm').then((s) => s.type === TMPFS_MAGIC, () => false);
  if (!isTmpfs) {
    t.log('skipped: /dev/shm is not a tmpfs');
    t.pass();
    return;
  }
  let full = 0;
  const result = await compareWithQemuIo(
    t,
    async (path) => {
      await sparseFile(path, 2 * MiB, [[0, 2 * MiB, 0x21]]);
      full = await sectors(path);
    },
    (node) => node.writeZeroes(64 * KiB, MiB),
    ['write -z 64k 1M'],
    '/dev/shm',
  );
  t.is(result.ours, full, 'the zeroed range stays allocated');
  t.true((result.node.driverState as FileState).unsupported.has('zeroRange'), 'ZERO_RANGE is not tried again');
  sameBytes(t, await readNode(result.node, 64 * KiB, MiB), filled(MiB, 0));
});
