/**
 * The qcow2 driver's `changeBackingFile` (QEMU's qcow2_change_backing_file,
 * what stream and commit use): header cluster 0 comes out byte for byte as
 * `qemu-img rebase -u` (which calls the same QEMU function) writes it, for
 * v3 with and without the feature table and v2 images, with and without a
 * backing file; unknown extensions are kept; what was written before is on
 * disk by the time the header names another backing file; reads go
 * through the new backing child at once.
 */
import { readFile } from 'node:fs/promises';
import test from 'ava';
import { BlockIoError } from '../../../core/errors.js';
import { buildHeaderCluster, headerWithBacking, listExtensions, readFixedHeader } from '../../../drivers/qcow2/qcow2-header.js';
import { EXT_FEATURE_TABLE } from '../../../drivers/qcow2/qcow2-format.js';
import { MiB, qcow2Fixture, requireQemu, run } from './fixture.js';

const variants = [
  { name: 'v3, 64 KiB clusters (feature table)', options: ['-o', 'compat=1.1,cluster_size=65536'] },
  { name: 'v3, 4 KiB clusters (no feature table)', options: ['-o', 'compat=1.1,cluster_size=4096'] },
  { name: 'v2, 64 KiB clusters', options: ['-o', 'compat=0.10'] },
];

for (const variant of variants) {
  test(`${variant.name}: the rewritten header cluster equals qemu-img rebase -u's`, async (t) => {
    if (!requireQemu(t)) return;
    const f = await qcow2Fixture(t);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', f.path('old.qcow2'), '1M']);
    await run('qemu-img', ['create', '-q', '-f', 'raw', f.path('new.raw'), '1M']);
    for (const [name, format] of [
      ['/a/new/absolute/name.qcow2', 'raw'],
      ['relative.img', 'qcow2'],
      [undefined, undefined],
    ] as const) {
      for (const file of ['ours.qcow2', 'qemu.qcow2']) {
        await run('qemu-img', ['create', '-q', '-f', 'qcow2', ...variant.options, '-b', f.path('old.qcow2'), '-F', 'qcow2', f.path(file), '1M']);
      }
      await run('qemu-img', ['rebase', '-u', '-b', name ?? '', ...(format === undefined ? [] : ['-F', format]), f.path('qemu.qcow2')]);
      const node = await f.open(f.path('ours.qcow2'), { backing: null });
      await node.changeBackingFile(name, format);
      await f.close();
      const ours = await readFile(f.path('ours.qcow2'));
      const qemu = await readFile(f.path('qemu.qcow2'));
      const clusterSize = readFixedHeader(qemu).clusterBits;
      t.true(ours.subarray(0, 2 ** clusterSize).equals(qemu.subarray(0, 2 ** clusterSize)), `backing ${name ?? 'none'}`);
      const info = JSON.parse(await run('qemu-img', ['info', '--output=json', '-f', 'qcow2', f.path('ours.qcow2')])) as Record<string, unknown>;
      t.is(info['backing-filename'], name);
      t.is(info['backing-filename-format'], format);
    }
  });
}

test('unknown extensions are kept, after the feature table, and the name follows the end marker', (t) => {
  const cluster = buildHeaderCluster({
    version: 3,
    clusterBits: 16,
    size: MiB,
    l1Size: 1,
    l1TableOffset: 3 * 65536,
    refcountTableOffset: 65536,
    refcountTableClusters: 1,
    refcountOrder: 4,
    incompatible: 0n,
    compatible: 0n,
    autoclear: 0n,
    backingFile: 'old.qcow2',
    backingFormat: 'qcow2',
  });
  // An unknown extension where the end marker was, then the end marker and the name again.
  const header = readFixedHeader(cluster);
  const end = header.backingFileOffset - 8;
  cluster.writeUInt32BE(0xdeadbeef, end);
  cluster.writeUInt32BE(5, end + 4);
  cluster.write('hello', end + 8, 'latin1');
  cluster.fill(0, end + 13, end + 24);
  cluster.writeBigUInt64BE(BigInt(end + 24), 8);
  cluster.write('old.qcow2', end + 24, 'utf8');
  const rewritten = headerWithBacking(cluster, readFixedHeader(cluster), { name: 'new.qcow2', format: 'raw' });
  const after = readFixedHeader(rewritten);
  const extensions = listExtensions(rewritten, after);
  t.deepEqual(extensions.map((e) => e.type), [0xe2792aca, EXT_FEATURE_TABLE, 0xdeadbeef]);
  t.is(extensions[2]!.data.toString('latin1'), 'hello');
  t.is(rewritten.toString('utf8', after.backingFileOffset, after.backingFileOffset + after.backingFileSize), 'new.qcow2');
  t.is(rewritten.readBigUInt64BE(after.backingFileOffset - 8), 0n, 'the end marker right before the name');
  t.throws(() => headerWithBacking(cluster, header, { name: 'x'.repeat(1024), format: 'raw' }), { instanceOf: BlockIoError, message: 'Invalid argument' });
});

test('data written before the change is on disk when the header changes; reads use the new backing child', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', f.path('base.qcow2'), '1M']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 1M', f.path('base.qcow2')]);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', f.path('base.qcow2'), '-F', 'qcow2', f.path('top.qcow2'), '1M']);
  const node = await f.open(f.path('top.qcow2'), {}, 'top');
  // Copy the backing data up (what a stream does), then drop the backing file.
  const data = Buffer.alloc(MiB);
  await node.read(0, data);
  await node.write(0, data);
  await node.write(4096, Buffer.alloc(512, 0x22));
  await f.layer.graph.setBacking(node, undefined);
  await node.changeBackingFile(undefined, undefined);
  t.is(node.children.get('backing'), undefined);
  const back = Buffer.alloc(8192);
  await node.read(0, back);
  t.true(back.subarray(0, 4096).every((b) => b === 0x11) && back.subarray(4096, 4608).every((b) => b === 0x22));
  // Still open: what qemu-img sees now is what a crash would leave.
  const info = JSON.parse(await run('qemu-img', ['info', '-U', '--output=json', '-f', 'qcow2', f.path('top.qcow2')])) as Record<string, unknown>;
  t.false('backing-filename' in info);
  const out = await run('qemu-io', ['-U', '-r', '-f', 'qcow2', '-c', 'read -P 0x11 0 4096', '-c', 'read -P 0x22 4096 512', '-c', 'read -P 0x11 8192 1040384', f.path('top.qcow2')]);
  t.notRegex(out, /Pattern verification failed/);
  await f.close('top');
  await run('qemu-img', ['check', '-f', 'qcow2', f.path('top.qcow2')]);
  t.pass();
});

test('a read-only node, or a driver without the operation, refuses to change its backing file', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', f.path('a.qcow2'), '1M']);
  const ro = await f.open(f.path('a.qcow2'), { 'read-only': true }, 'ro');
  await t.throwsAsync(ro.changeBackingFile('x', 'raw'), { instanceOf: BlockIoError, message: "Block node 'ro' is read-only" });
  await t.throwsAsync(ro.changeBackingFile(undefined, 'raw'), { instanceOf: BlockIoError, message: 'Invalid argument' });
  const raw = await f.layer.graph.add({ driver: 'raw', 'node-name': 'r', file: { driver: 'file', filename: f.path('a.qcow2') } });
  await t.throwsAsync(raw.changeBackingFile('x', 'raw'), { instanceOf: BlockIoError, message: 'Operation not supported' });
});

test('zeroes written while the image has no backing file stay zeroes once it names one: zero flags as qemu-io write -z sets them', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', f.path('base.qcow2'), '1M']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x55 0 1M', f.path('base.qcow2')]);
  for (const file of ['ours.qcow2', 'qemu.qcow2']) await run('qemu-img', ['create', '-q', '-f', 'qcow2', f.path(file), '1M']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -z 0 128k', '-c', 'write -z 200k 100k', '-c', 'write -z -u 512k 64k', f.path('qemu.qcow2')]);
  const node = await f.open(f.path('ours.qcow2'));
  await node.writeZeroes(0, 128 * 1024);
  await node.writeZeroes(200 * 1024, 100 * 1024);
  await node.writeZeroes(512 * 1024, 64 * 1024, { mayUnmap: true });
  await node.changeBackingFile(f.path('base.qcow2'), 'qcow2');
  await f.close();
  const map = (file: string) => run('qemu-img', ['map', '--output=json', '-f', 'qcow2', f.path(file)]);
  await run('qemu-img', ['rebase', '-u', '-b', f.path('base.qcow2'), '-F', 'qcow2', f.path('qemu.qcow2')]);
  t.is(await map('ours.qcow2'), await map('qemu.qcow2'));
  const io = await run('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -P 0 0 128k', '-c', 'read -P 0 192k 128k', '-c', 'read -P 0 512k 64k', '-c', 'read -P 0x55 128k 64k', f.path('ours.qcow2')]);
  t.notRegex(io, /Pattern verification failed/);
});
