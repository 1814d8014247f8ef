/**
 * Shrinking a qcow2 image (qcow2-shrink.ts) next to `qemu-img resize
 * --shrink`, on two copies of the same image: the files come out byte for
 * byte the same (entries, L1 and refcount tables, freed clusters discarded,
 * the file cut after its last used cluster), for several cluster sizes,
 * refcount widths, v2, lazy refcounts, an overlay and a persistent bitmap;
 * and again after both grow the image back to its old size (the part of
 * the last cluster past the new end is kept, as QEMU keeps it).
 */
import { copyFile, readFile } from 'node:fs/promises';
import test from 'ava';
import { assertClean, KiB, MiB, qcow2Fixture, requireQemu, run } from './fixture.js';

const WRITES = ['write -P 1 0 3M', 'write -P 2 5M 2M', 'write -c -P 3 12M 64k', 'write -P 4 14M 1M', 'write -z 14M 128k', 'write -P 5 15M 512'];

const variants: { name: string; options: string; bitmap?: boolean; backing?: boolean }[] = [
  { name: '64 KiB clusters', options: 'cluster_size=65536' },
  { name: '512 B clusters (many refcount blocks)', options: 'cluster_size=512' },
  { name: '512 B clusters, 1-bit refcounts', options: 'cluster_size=512,refcount_bits=1' },
  { name: 'v2, 4 KiB clusters', options: 'compat=0.10,cluster_size=4096' },
  { name: 'lazy refcounts', options: 'lazy_refcounts=on' },
  { name: 'an overlay', options: 'cluster_size=65536', backing: true },
  { name: 'a persistent bitmap', options: 'cluster_size=65536', bitmap: true },
];

for (const variant of variants) {
  test(`${variant.name}: the shrunk image is qemu-img resize --shrink's, byte for byte, and grows back as QEMU's`, async (t) => {
    if (!requireQemu(t)) return;
    const f = await qcow2Fixture(t);
    const [ours, qemu] = [f.path('ours.qcow2'), f.path('qemu.qcow2')];
    if (variant.backing) {
      await run('qemu-img', ['create', '-q', '-f', 'qcow2', f.path('base.qcow2'), '16M']);
      await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 9 0 16M', f.path('base.qcow2')]);
    }
    const backing = variant.backing ? ['-b', f.path('base.qcow2'), '-F', 'qcow2'] : [];
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', variant.options, ...backing, qemu, '16M']);
    if (variant.bitmap) await run('qemu-img', ['bitmap', '-f', 'qcow2', '--add', qemu, 'b0']);
    await run('qemu-io', ['-f', 'qcow2', ...WRITES.flatMap((w) => ['-c', w]), qemu]);
    await copyFile(qemu, ours);

    for (const size of [5 * MiB + 512 * KiB, 16 * MiB]) {
      await run('qemu-img', ['resize', '-q', '-f', 'qcow2', ...(size < 16 * MiB ? ['--shrink'] : []), qemu, String(size)]);
      const node = await f.open(ours);
      await node.truncate(size);
      t.is(node.length, size);
      await f.close();
      t.true((await readFile(ours)).equals(await readFile(qemu)), `${size} bytes: the files differ`);
      await assertClean(t, ours);
    }
    const io = await run('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -P 1 0 3M', '-c', 'read -P 2 5M 512k', '-c', 'read -P 0 12M 64k', ours]);
    t.notRegex(io, /Pattern verification failed/);
  });
}
