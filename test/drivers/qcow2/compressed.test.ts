/**
 * Compressed writes by us (reference §9 case 23): raw deflate with a 4 KiB
 * window, packed back to back, COPIED clear, read back by qemu-io, counted
 * by qemu-img check; QEMU's rules for what may be written compressed.
 */
import { readFile } from 'node:fs/promises';
import test from 'ava';
import { entryOf } from '../../../drivers/qcow2/qcow2-l1-l2.js';
import { assertClean, imageOf, KiB, MiB, pseudoRandom, qcow2Fixture, qemuCheck, readNode, requireQemu, run, sameBytes } from './fixture.js';

function text(length: number, seed: number): Buffer {
  const words = ['qcow2', 'cluster', 'refcount', 'deflate', 'backing', 'zero', 'L2', 'table'];
  const noise = pseudoRandom(length, seed);
  const out = Buffer.alloc(length);
  let at = 0;
  for (let i = 0; at < length; i++) at += out.write(`${words[noise[i % length]! % words.length]} `, at);
  return out;
}

for (const clusterSize of [4096, 65536]) {
  test(`${clusterSize} B clusters: compressed clusters pack, read back in qemu-io, and check clean`, async (t) => {
    if (!requireQemu(t)) return;
    const f = await qcow2Fixture(t);
    const path = f.path('c.qcow2');
    await f.create({ filename: path, size: 4 * MiB + 100 * KiB + 512, cluster_size: clusterSize });
    const node = await f.open(path);
    const first = text(16 * clusterSize, 1);
    await node.write(0, first, { compressed: true });
    const single = text(clusterSize, 2);
    await node.write(2 * MiB, single, { compressed: true });
    // Incompressible data is stored as a normal cluster, as QEMU does.
    const noise = pseudoRandom(clusterSize, 3);
    await node.write(3 * MiB, noise, { compressed: true });
    // The final partial cluster may be written compressed too.
    const lastStart = Math.floor((4 * MiB + 100 * KiB + 512) / clusterSize) * clusterSize;
    const tail = text(4 * MiB + 100 * KiB + 512 - lastStart, 4);
    await node.write(lastStart, tail, { compressed: true });
    sameBytes(t, await readNode(node, 0, first.length), first);
    const image = imageOf(node);
    const entries = await image.lock.run(() => Promise.all(Array.from({ length: 16 }, (_, i) => entryOf(image, i))));
    t.true(entries.every((e) => e.kind === 'compressed' && !e.copied));
    const hostClusters = new Set(entries.map((e) => Math.floor(e.host / clusterSize)));
    t.true(hostClusters.size < 16, `16 compressed clusters packed into ${hostClusters.size} host clusters`);
    t.true(entries.every((e, i) => i === 0 || e.host > entries[i - 1]!.host), 'packed back to back');
    const status = await node.blockStatus(0, clusterSize);
    t.deepEqual(status, [{ offset: 0, length: clusterSize, data: true, zero: false, allocated: true }], 'no host offset for compressed data');
    await t.throwsAsync(node.write(0, first.subarray(0, clusterSize), { compressed: true }), {
      message: 'qcow2: compressed data can only be written to unallocated clusters (offset 0)',
    });
    await t.throwsAsync(node.write(100, first.subarray(0, clusterSize), { compressed: true }), {
      message: 'qcow2: compressed writes must cover whole, aligned clusters',
    });
    // A normal write into a compressed cluster replaces it by a normal one.
    await node.write(clusterSize + 10, Buffer.alloc(20, 0xee));
    first.fill(0xee, clusterSize + 10, clusterSize + 30);
    await f.close();
    const report = await assertClean(t, path);
    t.is(report['compressed-clusters'], 15 + 1 + 1);
    const io = await run('qemu-io', ['-f', 'qcow2', '-r', '-c', `read -v ${clusterSize} 64`, path]);
    t.regex(io, /read 64\/64 bytes/);
    await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', path, f.path('c.raw')]);
    const raw = await readFile(f.path('c.raw'));
    sameBytes(t, raw.subarray(0, first.length), first);
    sameBytes(t, raw.subarray(2 * MiB, 2 * MiB + clusterSize), single);
    sameBytes(t, raw.subarray(3 * MiB, 3 * MiB + clusterSize), noise);
    sameBytes(t, raw.subarray(lastStart), tail);
    const { code } = await qemuCheck(path);
    t.is(code, 0);
  });
}

test('refcount_bits=1: compressed clusters cannot share a host cluster, and still check clean', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const path = f.path('r1.qcow2');
  await f.create({ filename: path, size: MiB, cluster_size: 65536, refcount_bits: 1 });
  const node = await f.open(path);
  await node.write(0, text(8 * 65536, 5), { compressed: true });
  await f.close();
  const report = await assertClean(t, path);
  t.is(report['compressed-clusters'], 8);
});
