/**
 * Growth and large sparse images (reference §9 cases 11, 21, 26): L1 table
 * growth by resize, refcount table growth by writing, offsets above 2^32
 * and 2^40, and 10T images QEMU wrote.
 */
import test from 'ava';
import { assertClean, compareWithQemu, GiB, imageOf, KiB, MiB, nodeMap, qcow2Fixture, qemuMap, readNode, requireQemu, run, sameBytes } from './fixture.js';

const TiB = 1024 * GiB;

test('resize 1G → 2T grows the L1 table; data stays, the image checks clean', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const path = f.path('g.qcow2');
  await f.create({ filename: path, size: GiB });
  const node = await f.open(path);
  await node.write(GiB - 4096, Buffer.alloc(4096, 0x11));
  const oldL1 = imageOf(node).l1Offset;
  await node.truncate(2 * TiB);
  t.is(node.length, 2 * TiB);
  t.is(imageOf(node).l1Size, 4096);
  t.not(imageOf(node).l1Offset, oldL1);
  await node.write(2 * TiB - 65536, Buffer.alloc(65536, 0x22));
  sameBytes(t, await readNode(node, GiB - 4096, 4096), Buffer.alloc(4096, 0x11));
  await f.close();
  await assertClean(t, path);
  const info = JSON.parse(await run('qemu-img', ['info', '--output=json', path])) as Record<string, unknown>;
  t.is(info['virtual-size'], 2 * TiB);
  const io = await run('qemu-io', ['-f', 'qcow2', '-r', '-c', `read -P 0x11 ${GiB - 4096} 4k`, '-c', `read -P 0x22 ${2 * TiB - 65536} 64k`, path]);
  t.notRegex(io, /Pattern verification failed/);
});

test('resize refuses what QEMU refuses', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await f.create({ filename: f.path('r.qcow2'), size: 64 * MiB, cluster_size: 512 });
  const node = await f.open(f.path('r.qcow2'));
  await t.throwsAsync(node.truncate(64 * MiB + 100), { message: 'The new size must be a multiple of 512' });
  await t.throwsAsync(node.truncate(200 * GiB), { message: 'Failed to grow the L1 table: File too large' });
  await f.close();
  await f.create({ filename: f.path('v2.qcow2'), size: 64 * MiB, compat: '0.10' });
  await run('qemu-img', ['snapshot', '-c', 's1', f.path('v2.qcow2')]);
  const v2 = await f.open(f.path('v2.qcow2'));
  await t.throwsAsync(v2.truncate(128 * MiB), { message: "Can't resize a v2 image which has snapshots" });
  await t.throwsAsync(v2.truncate(32 * MiB), { message: "Can't resize a v2 image which has snapshots" });
});

test('a v3 image with snapshots grows and shrinks, as QEMU 7.2 resizes it; the snapshot keeps its content', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const image = f.path('s.qcow2');
  await f.create({ filename: image, size: 4 * MiB, cluster_size: 4096 });
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 4M', image]);
  await run('qemu-img', ['snapshot', '-c', 's1', image]);
  const node = await f.open(image);
  await node.truncate(16 * MiB);
  await node.truncate(MiB);
  await f.close();
  t.regex(await run('qemu-img', ['check', image]), /No errors were found/);
  t.regex(await run('qemu-img', ['info', image]), /virtual size: 1 MiB/);
  t.notRegex(await run('qemu-io', ['-f', 'qcow2', '-c', 'read -P 1 0 1M', image]), /Pattern verification failed/);
  // Applied, the snapshot brings back its own size and content.
  await run('qemu-img', ['snapshot', '-a', 's1', image]);
  t.regex(await run('qemu-img', ['info', image]), /virtual size: 4 MiB/);
  t.notRegex(await run('qemu-io', ['-f', 'qcow2', '-c', 'read -P 1 0 4M', image]), /Pattern verification failed/);
});

test('growing over a larger backing file zeroes the new area instead of showing the backing data', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', f.path('base.qcow2'), '4M']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 0 4M', f.path('base.qcow2')]);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', f.path('top.qcow2'), '1000k']);
  const node = await f.open(f.path('top.qcow2'));
  await node.truncate(6 * MiB);
  const grown = await readNode(node, 0, 6 * MiB);
  sameBytes(t, grown.subarray(0, 1000 * KiB), Buffer.alloc(1000 * KiB, 0x33));
  sameBytes(t, grown.subarray(1000 * KiB), Buffer.alloc(6 * MiB - 1000 * KiB));
  await f.close();
  await assertClean(t, f.path('top.qcow2'));
});

test('writing more than 8 MiB at 512 B clusters grows the refcount table (new self-describing blocks)', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const path = f.path('rt.qcow2');
  await f.create({ filename: path, size: 32 * MiB, cluster_size: 512 });
  const node = await f.open(path);
  for (let i = 0; i < 12; i++) await node.write(i * MiB + 777, Buffer.alloc(MiB - 1554, i + 1));
  t.true(imageOf(node).reftableClusters > 1, 'the refcount table grew');
  for (let i = 0; i < 12; i++) sameBytes(t, await readNode(node, i * MiB + 777, MiB - 1554), Buffer.alloc(MiB - 1554, i + 1));
  await f.close();
  await assertClean(t, path);
});

test('a sparse 10T image of ours: writes across 2^32 and near 2^40 and at the end, clean, mapped as QEMU maps it', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const path = f.path('big.qcow2');
  await f.create({ filename: path, size: 10 * TiB });
  const node = await f.open(path);
  const writes: [number, number, number][] = [
    [4 * GiB - 512, 1024, 0x5a],
    [TiB - 100, 300, 0x6b],
    [5 * TiB, 64 * KiB, 0x7c],
    [10 * TiB - 4096, 4096, 0x8d],
  ];
  for (const [offset, length, byte] of writes) await node.write(offset, Buffer.alloc(length, byte));
  await f.close();
  await assertClean(t, path);
  const reopened = await f.open(path, { 'read-only': true });
  t.deepEqual(await nodeMap(reopened), await qemuMap(path));
  const io = await run('qemu-io', ['-f', 'qcow2', '-r', ...writes.flatMap(([o, l, b]) => ['-c', `read -P ${b} ${o} ${l}`]), path]);
  t.notRegex(io, /Pattern verification failed/);
});

test('a sparse 10T image QEMU wrote: data at 4G-512, 5T and 10T-4k reads back, zeroes elsewhere', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const path = f.path('qbig.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', path, '10T']);
  await run('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x5a ${4 * GiB - 512} 1k`, '-c', `write -P 0x6b ${5 * TiB} 64k`, '-c', `write -P 0x7c ${10 * TiB - 4096} 4k`, path]);
  const node = await f.open(path, { 'read-only': true });
  await compareWithQemu(t, node, path, f.path('qbig.raw'), false);
});

test('amend through the node API: a new size is the node\'s length at once; a v2 image becomes v3', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const image = f.path('a.qcow2');
  await f.create({ filename: image, size: 4 * MiB, compat: '0.10' });
  const node = await f.open(image);
  await node.amend({ size: 8 * MiB, compat: '1.1' });
  t.is(node.length, 8 * MiB);
  await f.close();
  const info = JSON.parse(await run('qemu-img', ['info', '--output=json', image])) as { 'virtual-size': number; 'format-specific': { data: { compat: string } } };
  t.is(info['virtual-size'], 8 * MiB);
  t.is(info['format-specific'].data.compat, '1.1');
  t.regex(await run('qemu-img', ['check', image]), /No errors were found/);
});
