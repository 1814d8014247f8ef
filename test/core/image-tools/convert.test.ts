/** convertImage: contents (qemu-img compare), holes (qemu-img map of qemu-img convert's own output), -B, -c, -n, -S; the copy planner. */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import type { BlockLayer } from '../../../core/block-layer.js';
import type { ImageCreator } from '../../../core/block/image-creator.js';
import { convertCacheMode, convertImage, type ConvertRequest } from '../../../core/image-tools/convert.js';
import { type CopyOp, dataRuns, planOps } from '../../../core/image-tools/copy-plan.js';
import { ImageToolError, withImage } from '../../../core/image-tools/image-access.js';
import { mapImage } from '../../../core/image-tools/map.js';
import { TOKENS } from '../../../core/tokens.js';
import { requirePeer } from '../../helpers/peers.js';
import { COW_CLUSTER, cowImages, QCOW2_REGISTERED, tempDir, toolLayer } from './cow-driver.js';

const run = promisify(execFile);

async function qemuMap(image: string, format = 'raw'): Promise<string> {
  return (await run('qemu-img', ['map', '--output=json', '-f', format, image])).stdout;
}

async function qemuCompare(a: string, b: string, formats = ['raw', 'raw']): Promise<string> {
  return (await run('qemu-img', ['compare', '-f', formats[0]!, '-F', formats[1]!, a, b])).stdout;
}

async function sparseSource(dir: string): Promise<string> {
  const src = join(dir, 'src.raw');
  await run('qemu-img', ['create', '-f', 'raw', src, '40M']);
  await run('qemu-io', [
    '-f', 'raw',
    '-c', 'write -P 0x11 0 1M',
    '-c', 'write -P 0x22 5M 3000k',
    '-c', 'write -z 12M 1M', // written zeroes: data in the file, but no need to copy them
    '-c', 'write -P 0x33 20971520 512',
    '-c', 'write -P 0x44 39M 1M',
    src,
  ]);
  return src;
}

async function convert(layer: BlockLayer, request: Partial<ConvertRequest> & Pick<ConvertRequest, 'source' | 'target'>) {
  return convertImage(layer, request);
}

test('raw to raw: the same contents, and the same holes as qemu-img convert leaves', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await tempDir(t);
  const src = await sparseSource(dir);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const progress: number[] = [];
  const dst = join(dir, 'ours.raw');
  const result = await convertImage(layer, { source: { filename: src, format: 'raw' }, target: { filename: dst, format: 'raw' } }, (done, total) => {
    t.is(total, 40 << 20);
    progress.push(done);
  });
  t.deepEqual(result, { bytes: 40 << 20, warnings: [] });
  t.is(progress.at(-1), 40 << 20);
  t.deepEqual(progress, [...progress].sort((a, b) => a - b));
  t.is(await qemuCompare(src, dst), 'Images are identical.\n');
  const reference = join(dir, 'theirs.raw');
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', src, reference]);
  t.is(await qemuMap(dst), await qemuMap(reference));
});

test('-S 0 writes everything: no holes are left', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await tempDir(t);
  const src = await sparseSource(dir);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const dst = join(dir, 'full.raw');
  await convert(layer, { source: { filename: src, format: 'raw' }, target: { filename: dst, format: 'raw' }, sparseSize: 0 });
  t.is(await qemuCompare(src, dst), 'Images are identical.\n');
  t.is(await qemuMap(dst), `[{ "start": 0, "length": ${40 << 20}, "depth": 0, "present": true, "zero": false, "data": true, "offset": 0}]\n`);
});

test('-n writes into an existing image: old data under the source\'s holes is zeroed; a smaller target is refused', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await tempDir(t);
  const src = await sparseSource(dir);
  const existing = join(dir, 'existing.raw');
  await run('qemu-img', ['create', '-f', 'raw', existing, '40M']);
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x99 2M 8M', existing]);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  await convert(layer, { source: { filename: src, format: 'raw' }, target: { filename: existing, format: 'raw' }, skipCreate: true });
  t.is(await qemuCompare(src, existing), 'Images are identical.\n');
  const small = join(dir, 'small.raw');
  await run('qemu-img', ['create', '-f', 'raw', small, '1M']);
  await t.throwsAsync(convert(layer, { source: { filename: src, format: 'raw' }, target: { filename: small, format: 'raw' }, skipCreate: true }), {
    message: 'output file is smaller than input file',
  });
});

test('errors: unknown format, compression the format cannot do, -B without -F, the source as target', async (t) => {
  const dir = await tempDir(t);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const src = join(dir, 's.raw');
  await layer.container.get<ImageCreator>(TOKENS.ImageCreator).create('raw', { filename: src, size: 1 << 20 });
  const source = { filename: src, format: 'raw' };
  const target = { filename: join(dir, 't.img'), format: 'raw' };
  await t.throwsAsync(convert(layer, { source, target: { ...target, format: 'nosuch' } }), { message: "Unknown file format 'nosuch'" });
  await t.throwsAsync(convert(layer, { source, target, compress: true }), { message: 'Compression not supported for this file format' });
  await t.throwsAsync(convert(layer, { source, target, backingFile: 'x' }), { message: 'Use of backing file requires explicit backing format' });
  await t.throwsAsync(convert(layer, { source, target, backingFile: 'x', backingFormat: 'raw' }), {
    message: `${target.filename}: Backing file not supported for file format 'raw'`,
  });
  const self = await t.throwsAsync(convert(layer, { source, target: source }), { instanceOf: ImageToolError });
  t.regex(self?.message ?? '', /Could not create .* the image is open as node/);
  await t.throwsAsync(convert(layer, { source: { filename: join(dir, 'none.raw'), format: 'raw' }, target }), {
    message: `Could not open '${join(dir, 'none.raw')}': Could not open '${join(dir, 'none.raw')}': No such file or directory`,
  });
});

test('-c writes whole clusters compressed, skipping zero clusters; -B copies only what the top image allocates', async (t) => {
  const dir = await tempDir(t);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const creator = layer.container.get<ImageCreator>(TOKENS.ImageCreator);
  const C = COW_CLUSTER;
  const base = join(dir, 'base.raw');
  const top = join(dir, 'top.cow');
  await creator.create('raw', { filename: base, size: 8 * C });
  await creator.create('cow', { filename: top, size: 8 * C + 1024, backing_file: 'base.raw', backing_fmt: 'raw' });
  await withImage(layer, { filename: base, format: 'raw' }, { readOnly: false }, (node) => node.write(0, Buffer.alloc(2 * C, 1)));
  await withImage(layer, { filename: top, format: 'cow' }, { readOnly: false }, async (node) => {
    await node.write(C + 100, Buffer.alloc(10, 2)); // a partial cluster over backing data
    await node.write(5 * C, Buffer.alloc(C, 3));
    await node.writeZeroes(6 * C, C);
  });
  const flat = join(dir, 'flat.cow');
  await convert(layer, { source: { filename: top, format: 'cow' }, target: { filename: flat, format: 'cow' }, compress: true });
  // Clusters 0 and 1 come from the backing file, 1 and 5 were written in top; the rest read as zeroes.
  t.deepEqual([...cowImages.get(flat)!.compressedWrites].sort((a, b) => a - b), [0, C, 5 * C]);
  const same = await withImage(layer, { filename: top, format: 'cow' }, { readOnly: true }, (a) =>
    withImage(layer, { filename: flat, format: 'cow' }, { readOnly: true }, async (b) => {
      const x = Buffer.alloc(a.length);
      const y = Buffer.alloc(b.length);
      await a.read(0, x);
      await b.read(0, y);
      return x.equals(y);
    }),
  );
  t.true(same);
  const rebased = join(dir, 'rebased.cow');
  await convert(layer, { source: { filename: top, format: 'cow' }, target: { filename: rebased, format: 'cow' }, backingFile: 'base.raw', backingFormat: 'raw' });
  const entries = await withImage(layer, { filename: rebased, format: 'cow' }, { readOnly: true }, (node) => mapImage(node));
  t.deepEqual(
    entries.map((e) => [e.start / C, e.length / C, e.depth, e.present, e.zero, e.data]),
    [
      [0, 1, 1, true, false, true],
      [1, 1, 0, true, false, true],
      [2, 3, 1, true, true, false], // holes of the raw backing file
      [5, 1, 0, true, false, true],
      [6, 1, 0, true, true, false],
      [7, 1, 1, true, true, false],
      [8, 0.25, 0, false, true, false], // past the backing file's end
    ],
  );
  for (const name of [top, flat, rebased]) cowImages.delete(name);
});

test('qcow2 targets: compressed and plain conversions pass qemu-img check and compare (once the qcow2 driver is registered)', async (t) => {
  if (!QCOW2_REGISTERED) {
    t.log('skipped: the qcow2 driver is not in plugin-manifest.json yet');
    t.pass();
    return;
  }
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await tempDir(t);
  const src = await sparseSource(dir);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  for (const compress of [false, true]) {
    const dst = join(dir, `out-${compress}.qcow2`);
    await convert(layer, { source: { filename: src, format: 'raw' }, target: { filename: dst, format: 'qcow2' }, compress, options: ['cluster_size=4k'] });
    await run('qemu-img', ['check', '-f', 'qcow2', dst]);
    t.is(await qemuCompare(src, dst, ['raw', 'qcow2']), 'Images are identical.\n');
    if (!compress) {
      // Writes in image order allocate clusters as qemu-img convert does: the same layout.
      const reference = join(dir, 'reference.qcow2');
      await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=4k', src, reference]);
      t.is(await qemuMap(dst, 'qcow2'), await qemuMap(reference, 'qcow2'));
    }
    const back = join(dir, `back-${compress}.raw`);
    await convert(layer, { source: { filename: dst, format: 'qcow2' }, target: { filename: back, format: 'raw' } });
    t.is(await qemuCompare(src, back), 'Images are identical.\n');
  }
});

test('qcow2 target: data runs that share clusters land in the clusters qemu-img convert gives them', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await tempDir(t);
  const src = join(dir, 'src.raw');
  await run('qemu-img', ['create', '-f', 'raw', src, '8M']);
  // Each 64 KiB cluster: data, an 8 KiB hole, data; so each 2 MiB request has 64 runs, two per cluster.
  const writes = Array.from({ length: 128 }, (_, c) => [
    '-c', `write -P ${1 + (c % 250)} ${c * 65536} 16k`,
    '-c', `write -P ${2 + (c % 250)} ${c * 65536 + 24576} 40k`,
  ]).flat();
  await run('qemu-io', ['-f', 'raw', ...writes, src]);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const dst = join(dir, 'ours.qcow2');
  await convert(layer, { source: { filename: src, format: 'raw' }, target: { filename: dst, format: 'qcow2' } });
  await run('qemu-img', ['check', '-f', 'qcow2', dst]);
  t.is(await qemuCompare(src, dst, ['raw', 'qcow2']), 'Images are identical.\n');
  const reference = join(dir, 'theirs.qcow2');
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', src, reference]);
  // The gaps are not written by either: each new cluster is zeroed in the file first (ZERO_RANGE), then its data written.
  t.is(await qemuMap(dst, 'qcow2'), await qemuMap(reference, 'qcow2'), 'clusters allocated in image order, as qemu-img allocates them');
});

test('qcow2 target with 4 KiB clusters: requests cut from each data extent as qemu-img cuts them, so refcount blocks land where it puts them', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await tempDir(t);
  const src = join(dir, 'src.raw');
  await run('qemu-img', ['create', '-f', 'raw', src, '48M']);
  // Data extents that start off any 2 MiB boundary, some longer than a request; with 4 KiB clusters a refcount
  // block covers 8 MiB of the file, so several are allocated in the middle of a run of data.
  const writes = Array.from({ length: 9 }, (_, i) => ['-c', `write -P ${i + 1} ${i * 5 * 1024 * 1024 + (300 + 68 * i) * 1024} ${3 * 1024 * 1024 + i * 100 * 1024}`]).flat();
  await run('qemu-io', ['-f', 'raw', ...writes, src]);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const dst = join(dir, 'ours.qcow2');
  await convert(layer, { source: { filename: src, format: 'raw' }, target: { filename: dst, format: 'qcow2' }, options: ['cluster_size=4k'] });
  const reference = join(dir, 'theirs.qcow2');
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=4k', src, reference]);
  t.is(await qemuMap(dst, 'qcow2'), await qemuMap(reference, 'qcow2'));
  t.true((await readFile(dst)).equals(await readFile(reference)), 'the image files are the same, byte for byte');
});

async function collect(ops: CopyOp[], options: Parameters<typeof planOps>[1]): Promise<CopyOp[]> {
  async function* source(): AsyncGenerator<CopyOp> {
    yield* ops;
  }
  const out: CopyOp[] = [];
  for await (const op of planOps(source(), options)) out.push(op);
  return out;
}

test('the planner aligns to clusters, turns partly zero clusters into data, merges and cuts', async (t) => {
  const ops: CopyOp[] = [
    { kind: 'data', offset: 0, length: 100 },
    { kind: 'zero', offset: 100, length: 5000 },
    { kind: 'data', offset: 5100, length: 10 },
    { kind: 'zero', offset: 5110, length: 20000 - 5110 },
  ];
  t.deepEqual(await collect(ops, { align: 4096, end: 20000, maxData: 4096, zeroAsData: false }), [
    { kind: 'data', offset: 0, length: 4096 },
    { kind: 'data', offset: 4096, length: 4096 },
    { kind: 'zero', offset: 8192, length: 20000 - 8192 }, // the short last cluster needs no data
  ]);
  t.deepEqual(await collect(ops, { align: 0, end: 20000, maxData: 1 << 20, zeroAsData: false }), ops);
  t.deepEqual(await collect(ops, { align: 0, end: 20000, maxData: 8192, zeroAsData: true }), [
    { kind: 'data', offset: 0, length: 8192 },
    { kind: 'data', offset: 8192, length: 8192 },
    { kind: 'data', offset: 16384, length: 20000 - 16384 },
  ]);
  const skips: CopyOp[] = [
    { kind: 'skip', offset: 0, length: 8192 },
    { kind: 'zero', offset: 8192, length: 4096 },
    { kind: 'skip', offset: 12288, length: 2048 },
    { kind: 'zero', offset: 14336, length: 2048 },
  ];
  t.deepEqual(await collect(skips, { align: 4096, end: 16384, maxData: 65536, zeroAsData: false }), [
    { kind: 'skip', offset: 0, length: 8192 },
    { kind: 'zero', offset: 8192, length: 4096 },
    { kind: 'data', offset: 12288, length: 4096 }, // half skipped, half zero: copied
  ]);
  // fromExtents: cut maxData from each data extent's start (moved up to a cluster boundary), and where one extent follows another.
  const extents: CopyOp[] = [
    { kind: 'data', offset: 3000, length: 10000 },
    { kind: 'data', offset: 13000, length: 5000 },
    { kind: 'zero', offset: 18000, length: 2000 },
  ];
  t.deepEqual(await collect(extents, { align: 4096, end: 20000, maxData: 8192, zeroAsData: false, fromExtents: true }), [
    { kind: 'data', offset: 0, length: 12288 },
    { kind: 'data', offset: 12288, length: 4096 },
    { kind: 'data', offset: 16384, length: 20000 - 16384 },
  ]);
  t.deepEqual(await collect(extents, { align: 4096, end: 20000, maxData: 8192, zeroAsData: false }), [
    { kind: 'data', offset: 0, length: 8192 },
    { kind: 'data', offset: 8192, length: 8192 },
    { kind: 'data', offset: 16384, length: 20000 - 16384 },
  ]);
});

test('zero runs inside data are found in blocks of the sparse size', (t) => {
  const buf = Buffer.alloc(16384);
  buf[5000] = 1;
  t.deepEqual(dataRuns(buf, 4096, 4096), [
    { offset: 4096, length: 4096, zero: true },
    { offset: 8192, length: 4096, zero: false },
    { offset: 12288, length: 8192, zero: true },
  ]);
  t.deepEqual(dataRuns(buf.subarray(0, 6000), 1000, 4096), [
    { offset: 1000, length: 3096, zero: true },
    { offset: 4096, length: 2904, zero: false },
  ]);
  t.deepEqual(dataRuns(buf, 0, 0), [{ offset: 0, length: 16384, zero: false }]);
});

test('-t: unsafe and writeback as qemu-img, none as writeback; others refused with qemu-img\'s message or ours', (t) => {
  t.is(convertCacheMode('unsafe'), 'unsafe');
  t.is(convertCacheMode('writeback'), 'writeback');
  t.is(convertCacheMode('none'), 'writeback');
  t.throws(() => convertCacheMode('directsync'), {
    instanceOf: ImageToolError,
    message: "cache mode 'directsync' is not supported: blocklayer accepts unsafe, writeback and none",
  });
  t.throws(() => convertCacheMode('writethrough'), { instanceOf: ImageToolError, message: /^cache mode 'writethrough' is not supported/ });
  t.throws(() => convertCacheMode('bogus'), { instanceOf: ImageToolError, message: 'Invalid cache option: bogus' });
});
