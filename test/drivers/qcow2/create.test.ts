/**
 * Image creation (reference §9 case 19): byte for byte what qemu-img create
 * writes, clean under qemu-img check for every cluster size and refcount
 * width, QEMU's option checks and messages, and the size taken from the
 * backing file.
 */
import { readFile, writeFile } from 'node:fs/promises';
import test from 'ava';
import { assertClean, GiB, imageOf, KiB, MiB, qcow2Fixture, requireQemu, run } from './fixture.js';

const sameAsQemu: [string, Record<string, unknown>, string[]][] = [
  ['1G, defaults', { size: GiB }, ['1G']],
  ['compat=0.10', { size: GiB, compat: '0.10' }, ['-o', 'compat=0.10', '1G']],
  ['512 B clusters', { size: 64 * MiB, cluster_size: 512 }, ['-o', 'cluster_size=512', '64M']],
  ['4k clusters (no feature table)', { size: 64 * MiB, cluster_size: 4096 }, ['-o', 'cluster_size=4096', '64M']],
  ['2M clusters', { size: 64 * MiB, cluster_size: 2 * MiB }, ['-o', 'cluster_size=2M', '64M']],
  ['refcount_bits=1', { size: 64 * MiB, refcount_bits: 1 }, ['-o', 'refcount_bits=1', '64M']],
  ['lazy_refcounts', { size: 16 * MiB, lazy_refcounts: true }, ['-o', 'lazy_refcounts=on', '16M']],
  ['a size rounded up to 512', { size: 1000 }, ['1000']],
  ['preallocation=metadata', { size: 1000000, preallocation: 'metadata' }, ['-o', 'preallocation=metadata', '1000000']],
  ['backing file, size taken from it', { backing_file: 'base.qcow2', backing_fmt: 'qcow2' }, ['-b', 'base.qcow2', '-F', 'qcow2']],
  ['v2 overlay', { backing_file: 'base.qcow2', backing_fmt: 'qcow2', compat: '0.10', size: 5 * MiB }, ['-b', 'base.qcow2', '-F', 'qcow2', '-o', 'compat=0.10', '5M']],
  ['16G at 512 B clusters (refcount blocks beyond the first)', { size: 16 * GiB, cluster_size: 512 }, ['-o', 'cluster_size=512', '16G']],
  ['8G at 512 B clusters, 64-bit refcounts (refcount table growth)', { size: 8 * GiB, cluster_size: 512, refcount_bits: 64 }, ['-o', 'cluster_size=512,refcount_bits=64', '8G']],
];

for (const [title, options, qemuArgs] of sameAsQemu) {
  test(`create is byte for byte qemu-img create: ${title}`, async (t) => {
    if (!requireQemu(t)) return;
    const f = await qcow2Fixture(t);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', f.path('base.qcow2'), '3M']);
    await f.create({ filename: f.path('ours.qcow2'), ...options });
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'compat=1.1', f.path('theirs.qcow2'), ...qemuArgs]);
    const [ours, theirs] = [await readFile(f.path('ours.qcow2')), await readFile(f.path('theirs.qcow2'))];
    t.is(ours.length, theirs.length);
    t.true(ours.equals(theirs), 'identical bytes');
  });
}

/** Every cluster size with the default width (v2 and v3), and every width at the smallest, default and largest cluster size. */
const layouts: { compat: '0.10' | '1.1'; clusterSize: number; widths: number[] }[] = [
  ...[512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, MiB, 2 * MiB].flatMap((clusterSize) => [
    { compat: '0.10' as const, clusterSize, widths: [16] },
    { compat: '1.1' as const, clusterSize, widths: [16] },
  ]),
  ...[512, 65536, 2 * MiB].map((clusterSize) => ({ compat: '1.1' as const, clusterSize, widths: [1, 2, 4, 8, 32, 64] })),
];

for (const { compat, clusterSize, widths } of layouts) {
  test(`compat ${compat}, ${clusterSize} B clusters, ${widths.join('/')}-bit refcounts: written, clean, described as qemu-img info says`, async (t) => {
    if (!requireQemu(t)) return;
    const f = await qcow2Fixture(t);
    for (const bits of widths) {
      const path = f.path(`c${bits}.qcow2`);
      await f.create({ filename: path, size: 64 * MiB, cluster_size: clusterSize, compat, refcount_bits: bits });
      const node = await f.open(path);
      await node.write(3 * MiB + 100, Buffer.alloc(70 * KiB, 0x5a));
      await node.writeZeroes(40 * MiB, 3 * clusterSize);
      await node.write(63 * MiB, Buffer.alloc(4096, 0xa5), { compressed: clusterSize <= 4096 });
      const description = await node.driver.describe!(node.driverState);
      await f.close();
      await assertClean(t, path);
      const info = JSON.parse(await run('qemu-img', ['info', '--output=json', path])) as Record<string, any>;
      t.is(info['cluster-size'], clusterSize);
      t.deepEqual(description.formatSpecific, info['format-specific']);
      t.is(description.dirtyFlag, info['dirty-flag']);
    }
  });
}

test('creation options are checked as QEMU checks them', async (t) => {
  const f = await qcow2Fixture(t);
  const create = (options: Record<string, unknown>) => f.create({ filename: f.path('x.qcow2'), ...options });
  const cases: [Record<string, unknown>, string][] = [
    [{ size: MiB, backing_file: 'b.qcow2' }, 'Backing file specified without backing format'],
    [{ size: MiB, backing_fmt: 'qcow2' }, 'Backing format cannot be used without backing file'],
    [{ size: MiB, cluster_size: 1000 }, 'Cluster size must be a power of two between 512 and 2048k'],
    [{ size: MiB, cluster_size: 4 * MiB }, 'Cluster size must be a power of two between 512 and 2048k'],
    [{ size: MiB, compat: '0.10', lazy_refcounts: true }, 'Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)'],
    [{ size: MiB, refcount_bits: 3 }, 'Refcount width must be a power of two and may not exceed 64 bits'],
    [{ size: MiB, refcount_bits: 128 }, 'Refcount width must be a power of two and may not exceed 64 bits'],
    [{ size: MiB, compat: '0.10', refcount_bits: 8 }, 'Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)'],
    [{ size: MiB, backing_file: 'b.qcow2', backing_fmt: 'qcow2', preallocation: 'metadata' }, 'Backing file and preallocation can only be used at the same time if extended_l2 is on'],
    [{}, 'Image creation needs a size parameter'],
    [{ size: 200 * GiB, cluster_size: 512 }, "The image size is too large for file format 'qcow2' (try using a larger cluster size)"],
  ];
  for (const [options, message] of cases) await t.throwsAsync(create(options), { message }, JSON.stringify(options));
  await t.throwsAsync(create({ size: MiB, compat: '0.9' }), { message: "Parameter 'version' does not accept value '0.9'" });
});

test('the size comes from a raw or qcow2 backing file; other formats need one', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await writeFile(f.path('base.raw'), Buffer.alloc(3 * MiB + 512));
  await f.create({ filename: f.path('r.qcow2'), backing_file: 'base.raw', backing_fmt: 'raw' });
  const overRaw = await f.open(f.path('r.qcow2'), { 'read-only': true });
  t.is(overRaw.length, 3 * MiB + 512);
  t.is(overRaw.children.get('backing')!.node.driver.name, 'raw');
  await f.close();
  await t.throwsAsync(f.create({ filename: f.path('v.qcow2'), backing_file: 'base.vmdk', backing_fmt: 'vmdk' }), {
    message: /Image creation needs a size parameter/,
  });
  await t.throwsAsync(f.create({ filename: f.path('m.qcow2'), backing_file: 'missing.qcow2', backing_fmt: 'qcow2' }), {
    message: /^Could not open backing file '.*missing\.qcow2': No such file or directory$/,
  });
  t.is(imageOf(await f.open(f.path('r.qcow2'), { 'read-only': true })).backing?.length, 3 * MiB + 512);
});
