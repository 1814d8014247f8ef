/**
 * The open options (BlockdevOptionsQcow2) and what the node reports:
 * cache sizes with QEMU's rules, lazy refcounts and the dirty bit, the
 * overlap-check modes, discard pass-through, feature bits kept or cleared,
 * and describe()/limits as query-named-block-nodes and qemu-img info show
 * them.
 */
import { readFile, stat, writeFile } from 'node:fs/promises';
import test from 'ava';
import { imageInfo } from '../../../core/block/node-info.js';
import { qcow2Options } from '../../../drivers/qcow2/options.js';
import { GiB, imageOf, KiB, MiB, qcow2Fixture, readNode, requireQemu, run, runStatus } from './fixture.js';

test('the options are QEMU BlockdevOptionsQcow2 members, in QEMU order', (t) => {
  t.deepEqual(Object.keys(qcow2Options.properties), [
    'file',
    'backing',
    'lazy-refcounts',
    'pass-discard-request',
    'pass-discard-snapshot',
    'pass-discard-other',
    'overlap-check',
    'cache-size',
    'l2-cache-size',
    'l2-cache-entry-size',
    'refcount-cache-size',
    'cache-clean-interval',
  ]);
});

test('cache sizes follow QEMU: whole-image L2 cache up to 32 MiB, 4 KiB entries beyond, 4 refcount clusters', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await f.create({ filename: f.path('small.qcow2'), size: GiB });
  await f.create({ filename: f.path('huge.qcow2'), size: 1024 * GiB });
  const small = imageOf(await f.open(f.path('small.qcow2'), { 'read-only': true }, 'small'));
  t.deepEqual([small.l2Cache.capacity, small.l2Cache.entrySize, small.refcountCache.capacity], [2, 65536, 4]);
  const huge = imageOf(await f.open(f.path('huge.qcow2'), { 'read-only': true }, 'huge'));
  t.deepEqual([huge.l2Cache.capacity, huge.l2Cache.entrySize], [32 * MiB / 4096, 4096]);
  const sized = imageOf(await f.open(f.path('small.qcow2'), { 'read-only': true, 'cache-size': 4 * MiB }, 's2'));
  t.deepEqual([sized.l2Cache.capacity, sized.refcountCache.capacity], [2, (4 * MiB - 131072) / 65536]);
  const entries = imageOf(await f.open(f.path('small.qcow2'), { 'read-only': true, 'l2-cache-entry-size': 1024 }, 's3'));
  t.deepEqual([entries.l2Cache.capacity, entries.l2Cache.entrySize], [128, 1024]);
  const bad: [Record<string, unknown>, string | RegExp][] = [
    [{ 'cache-size': MiB, 'l2-cache-size': MiB, 'refcount-cache-size': MiB }, 'cache-size, l2-cache-size and refcount-cache-size may not be set at the same time'],
    [{ 'cache-size': MiB, 'l2-cache-size': 2 * MiB }, 'l2-cache-size may not exceed cache-size'],
    [{ 'cache-size': MiB, 'refcount-cache-size': 2 * MiB }, 'refcount-cache-size may not exceed cache-size'],
    [{ 'l2-cache-entry-size': 1000 }, 'L2 cache entry size must be a power of two between 512 and the cluster size (65536)'],
    [{ 'l2-cache-entry-size': 131072 }, 'L2 cache entry size must be a power of two between 512 and the cluster size (65536)'],
    [{ 'cache-clean-interval': 2 ** 32 }, 'Cache clean interval too big'],
    [{ 'overlap-check': 'some' }, /overlap-check/],
    [{ 'no-such-option': 1 }, /no-such-option/],
  ];
  for (const [options, message] of bad) await t.throwsAsync(f.open(f.path('small.qcow2'), { 'read-only': true, ...options }, 'bad'), { message });
});

test('lazy refcounts: the image is dirty while open after a write, clean after close; refused on v2', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const path = f.path('lazy.qcow2');
  await f.create({ filename: path, size: 16 * MiB, lazy_refcounts: true });
  const node = await f.open(path);
  t.true(imageOf(node).lazyRefcounts);
  await node.write(0, Buffer.alloc(128 * KiB, 1));
  const dirty = JSON.parse(await run('qemu-img', ['info', '-U', '--output=json', path])) as Record<string, unknown>;
  t.is(dirty['dirty-flag'], true);
  t.true((await node.driver.describe!(node.driverState)).dirtyFlag);
  await f.close();
  const clean = JSON.parse(await run('qemu-img', ['info', '--output=json', path])) as Record<string, unknown>;
  t.is(clean['dirty-flag'], false);
  t.is((await runStatus('qemu-img', ['check', path])).code, 0);
  const off = await f.open(path, { 'lazy-refcounts': false });
  t.false(imageOf(off).lazyRefcounts);
  await f.close();
  await f.create({ filename: f.path('v2.qcow2'), size: MiB, compat: '0.10' });
  await t.throwsAsync(f.open(f.path('v2.qcow2'), { 'lazy-refcounts': true }), {
    message: 'Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level',
  });
});

test('unknown autoclear bits are cleared before the first write, not on open; unknown compatible bits stay', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const path = f.path('bits.qcow2');
  await f.create({ filename: path, size: 4 * MiB });
  const bytes = await readFile(path);
  bytes.writeBigUInt64BE(1n << 15n, 88);
  bytes.writeBigUInt64BE(2n, 80);
  await writeFile(path, bytes);
  await f.open(path);
  await f.close();
  t.is((await readFile(path)).readBigUInt64BE(88), 1n << 15n, 'an open without writes keeps them');
  const node = await f.open(path);
  await node.write(0, Buffer.alloc(512, 7));
  t.is((await readFile(path)).readBigUInt64BE(88), 0n, 'cleared before the write');
  await f.close();
  t.is((await readFile(path)).readBigUInt64BE(80), 2n, 'compatible bits preserved');
  t.is((await runStatus('qemu-img', ['check', path])).code, 0);
});

test('overlap-check modes: none, constant, cached (default), all', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const path = f.path('o.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', path, '4M']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 1M', path]);
  await run('qemu-img', ['snapshot', '-c', 's1', path]);
  // After the snapshot this copies the L2 table: the old one is then the snapshot's only.
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 2 0 64k', path]);
  const bytes = await readFile(path);
  const l1 = Number(bytes.readBigUInt64BE(40));
  const activeL2 = Number(bytes.readBigUInt64BE(l1) & 0xfffffffffe00n);
  const snapshotTable = Number(bytes.readBigUInt64BE(64));
  const snapshotL1 = Number(bytes.readBigUInt64BE(snapshotTable));
  const inactiveL2 = Number(bytes.readBigUInt64BE(snapshotL1) & 0xfffffffffe00n);
  t.not(activeL2, inactiveL2);
  const target = (host: number) => {
    const copy = Buffer.from(bytes);
    copy.writeBigUInt64BE((1n << 63n) | BigInt(host), activeL2 + 8 * 2);
    return copy;
  };
  const attempt = async (host: number, mode: string) => {
    await writeFile(path, target(host));
    const node = await f.open(path, { 'overlap-check': mode });
    const result = await node.write(2 * 65536, Buffer.alloc(512, 9)).then(() => 'written', (e: Error) => e.message);
    await f.close().catch(() => undefined);
    return result;
  };
  t.is(await attempt(0x20000, 'none'), 'written');
  t.is(await attempt(0x20000, 'constant'), 'written', 'refcount blocks are not a constant check');
  t.regex(await attempt(0x10000, 'constant'), /overlaps with refcount table/);
  t.regex(await attempt(0x20000, 'cached'), /overlaps with refcount block/);
  t.is(await attempt(inactiveL2, 'cached'), 'written', 'snapshot L2 tables need overlap-check=all');
  t.regex(await attempt(inactiveL2, 'all'), /overlaps with inactive L2 table/);
  t.regex(await attempt(snapshotL1, 'cached'), /overlaps with inactive L1 table/);
});

test('pass-discard-request decides whether freed clusters are discarded in the file', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  for (const pass of [true, false]) {
    const path = f.path(`d${pass}.qcow2`);
    await f.create({ filename: path, size: 16 * MiB });
    const node = await f.layer.graph.add({
      driver: 'qcow2',
      'node-name': 'd',
      discard: 'unmap',
      'pass-discard-request': pass,
      file: { driver: 'file', filename: path, discard: 'unmap' },
    });
    await node.write(0, Buffer.alloc(8 * MiB, 0x5a));
    await node.flush();
    const before = (await stat(path)).blocks;
    await node.discard(0, 8 * MiB);
    await node.flush();
    const after = (await stat(path)).blocks;
    t.is(after < before - 8000, pass, `pass-discard-request=${pass}: ${before} → ${after} blocks`);
    await f.layer.graph.del('d');
  }
});

test('describe, limits and image info are what qemu-img info shows', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', f.path('base.qcow2'), '1M']);
  await f.create({ filename: f.path('top.qcow2'), backing_file: 'base.qcow2', backing_fmt: 'qcow2', cluster_size: 8192 });
  const node = await f.open(f.path('top.qcow2'), { 'read-only': true });
  t.is(node.limits.clusterSize, 8192);
  t.is(node.limits.requestAlignment, 1);
  const info = await imageInfo(node, true);
  t.is(info.filename, f.path('top.qcow2'));
  t.is(info['cluster-size'], 8192);
  t.is(info['virtual-size'], MiB);
  t.is(info['dirty-flag'], false);
  t.deepEqual(info['format-specific'], {
    type: 'qcow2',
    data: { compat: '1.1', 'compression-type': 'zlib', 'lazy-refcounts': false, 'refcount-bits': 16, corrupt: false, 'extended-l2': false },
  });
  t.is(info['backing-image']?.['cluster-size'], 4096);
  t.deepEqual(await readNode(node, 0, 16), Buffer.alloc(16));
});

test('a read-only file makes a read-write open fail, or fall back to read-only with auto-read-only', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const path = f.path('ro.qcow2');
  await f.create({ filename: path, size: MiB });
  await f.layer.graph.add({ driver: 'file', 'node-name': 'rofile', filename: path, 'read-only': true });
  await t.throwsAsync(f.layer.graph.add({ driver: 'qcow2', 'node-name': 'q', file: 'rofile' }), {
    message: /^qcow2: the file of image '.*ro\.qcow2' is read-only$/,
  });
  const node = await f.layer.graph.add({ driver: 'qcow2', 'node-name': 'q', file: 'rofile', 'auto-read-only': true });
  t.true(node.readOnly);
  t.false(imageOf(node).writable);
});
