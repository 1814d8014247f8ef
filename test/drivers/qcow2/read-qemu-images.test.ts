/**
 * QEMU writes, we read (reference §9, cases 1–5, 7, 9, 10, 13, 18): every
 * image is made by qemu-img/qemu-io, then our full read must equal
 * `qemu-img convert -O raw` and our block status `qemu-img map`.
 */
import { writeFile } from 'node:fs/promises';
import test from 'ava';
import { compareWithQemu, pseudoRandom, qcow2Fixture, requireQemu, run } from './fixture.js';

/** Creates `name` with qemu-img (extra args before the name) and runs qemu-io commands on it. */
async function qemuImage(path: string, size: string, createArgs: string[], commands: string[]): Promise<void> {
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', ...createArgs, path, size]);
  if (commands.length > 0) await run('qemu-io', ['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), path]);
}

const basicWrites = ['write -P 0xaa 0 64k', 'write -P 0xbb 100k 8k', 'write -z 1M 64k', 'write -P 0xcc 512M 4k'];

for (const [title, createArgs] of [
  ['v3', []],
  ['v2', ['-o', 'compat=0.10']],
] as const) {
  test(`${title}, 64k clusters: data, an unaligned write, write -z and a second L2 table`, async (t) => {
    if (!requireQemu(t)) return;
    const f = await qcow2Fixture(t);
    await qemuImage(f.path('a.qcow2'), '1G', [...createArgs], basicWrites);
    const node = await f.open(f.path('a.qcow2'), { 'read-only': true });
    await compareWithQemu(t, node, f.path('a.qcow2'), f.path('a.raw'), false);
  });
}

for (const clusterSize of ['512', '1k', '2k', '4k', '8k', '64k', '1M', '2M']) {
  test(`cluster size ${clusterSize}: a 64M image spanning several L2 tables`, async (t) => {
    if (!requireQemu(t)) return;
    const f = await qcow2Fixture(t);
    const writes = ['write -P 0x11 0 5k', 'write -P 0x22 33M 100k', 'write -z 40M 1M', 'write -P 0x33 62M 1536k', 'write -P 0x44 7777 3333'];
    await qemuImage(f.path('c.qcow2'), '64M', ['-o', `cluster_size=${clusterSize}`], writes);
    const node = await f.open(f.path('c.qcow2'), { 'read-only': true });
    await compareWithQemu(t, node, f.path('c.qcow2'), f.path('c.raw'));
  });
}

test('v3 zero clusters: ZERO_ALLOC (write -z), ZERO_PLAIN (write -z -u, discard) read as zeroes', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await qemuImage(f.path('z.qcow2'), '4M', [], [
    'write -P 0x44 0 512k',
    'write -z 64k 64k',
    'write -z -u 128k 64k',
    'discard 192k 64k',
    'write -z -u 6144 1024',
    'discard 1024 1024',
  ]);
  const node = await f.open(f.path('z.qcow2'), { 'read-only': true });
  await compareWithQemu(t, node, f.path('z.qcow2'), f.path('z.raw'));
});

for (const [title, options] of [
  ['v3, 64k clusters', []],
  ['v2, 4k clusters', ['-o', 'compat=0.10,cluster_size=4k']],
] as const) {
  test(`compressed image from convert -c (${title}): text, random and zero data`, async (t) => {
    if (!requireQemu(t)) return;
    const f = await qcow2Fixture(t);
    const text = Buffer.from('The quick brown fox jumps over the lazy dog. '.repeat(40000));
    const source = Buffer.concat([text.subarray(0, 1_500_000), pseudoRandom(300_000, 7), Buffer.alloc(700_000), text.subarray(0, 800_000)]);
    await writeFile(f.path('src.raw'), source.subarray(0, Math.floor(source.length / 512) * 512));
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-c', ...options, f.path('src.raw'), f.path('comp.qcow2')]);
    const node = await f.open(f.path('comp.qcow2'), { 'read-only': true });
    await compareWithQemu(t, node, f.path('comp.qcow2'), f.path('comp.raw'));
  });
}

test('write -c on the final partial cluster, then a normal write into a compressed cluster', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await qemuImage(f.path('p.qcow2'), '100k', [], ['write -c -P 0x5a 64k 36k', 'write -c -P 0x6b 0 64k', 'write -P 0x7c 4k 4k']);
  const node = await f.open(f.path('p.qcow2'), { 'read-only': true });
  await compareWithQemu(t, node, f.path('p.qcow2'), f.path('p.raw'));
});

test('v2 overlay: discard shows the backing file again, write -z writes real zeroes', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await qemuImage(f.path('base.qcow2'), '1M', ['-o', 'compat=0.10'], ['write -P 0x12 0 1M']);
  await qemuImage(f.path('top.qcow2'), '1M', ['-o', 'compat=0.10', '-b', 'base.qcow2', '-F', 'qcow2'], [
    'write -P 0x34 0 256k',
    'discard 0 64k',
    'write -z 128k 64k',
  ]);
  const node = await f.open(f.path('top.qcow2'), { 'read-only': true });
  await compareWithQemu(t, node, f.path('top.qcow2'), f.path('top.raw'));
});

test('a raw backing file (-F raw)', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await writeFile(f.path('base.raw'), pseudoRandom(2 * 1024 * 1024, 3));
  await qemuImage(f.path('top.qcow2'), '3M', ['-b', 'base.raw', '-F', 'raw'], ['write -P 0x34 100k 50k', 'write -z 1M 64k']);
  const node = await f.open(f.path('top.qcow2'), { 'read-only': true });
  await compareWithQemu(t, node, f.path('top.qcow2'), f.path('top.raw'));
});

test('an internal snapshot followed by writes: the active view, with COPIED clear on shared clusters', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await qemuImage(f.path('s.qcow2'), '4M', [], ['write -P 0x01 0 1M']);
  await run('qemu-img', ['snapshot', '-c', 'snap1', f.path('s.qcow2')]);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x02 64k 4k', '-c', 'write -P 0x03 2M 64k', f.path('s.qcow2')]);
  const node = await f.open(f.path('s.qcow2'), { 'read-only': true });
  await compareWithQemu(t, node, f.path('s.qcow2'), f.path('s.raw'));
});

for (const preallocation of ['metadata', 'falloc', 'full']) {
  test(`preallocation=${preallocation} reads as zeroes and maps as QEMU maps it`, async (t) => {
    if (!requireQemu(t)) return;
    const f = await qcow2Fixture(t);
    await qemuImage(f.path('pa.qcow2'), '3M', ['-o', `preallocation=${preallocation}`], ['write -P 0x66 1M 4k']);
    const node = await f.open(f.path('pa.qcow2'), { 'read-only': true });
    await compareWithQemu(t, node, f.path('pa.qcow2'), f.path('pa.raw'));
  });
}
