/**
 * zstd compressed clusters (compression type 1): images qemu-img compresses
 * with zstd read bit-exact; ours, written compressed, read back in qemu-img
 * and check clean; the header says zstd as QEMU's does; a damaged frame is
 * an I/O error, not wrong data.
 */
import { open, readFile, writeFile } from 'node:fs/promises';
import test from 'ava';
import { BlockIoError } from '../../../core/errors.js';
import { entryOf } from '../../../drivers/qcow2/qcow2-l1-l2.js';
import { assertClean, imageOf, KiB, MiB, pseudoRandom, qcow2Fixture, readNode, requireQemu, run, sameBytes } from './fixture.js';

/** Compressible text, with a run of noise (stored uncompressed) and one of zeroes. */
function content(length: number, seed: number): Buffer {
  const words = ['zstd', 'frame', 'cluster', 'qcow2', 'sector', 'refcount'];
  const noise = pseudoRandom(length, seed);
  const out = Buffer.alloc(length);
  let at = 0;
  for (let i = 0; at < length; i++) at += out.write(`${words[noise[i]! % words.length]} `, at);
  noise.copy(out, length / 2, 0, length / 8);
  out.fill(0, length / 4, length / 4 + length / 16);
  return out;
}

for (const clusterSize of [4 * KiB, 64 * KiB, 2 * MiB]) {
  test(`${clusterSize / KiB} KiB clusters: what qemu-img compresses with zstd reads bit-exact`, async (t) => {
    if (!requireQemu(t)) return;
    const f = await qcow2Fixture(t);
    const data = content(6 * MiB, clusterSize);
    await writeFile(f.path('src.raw'), data);
    const path = f.path('theirs.qcow2');
    await run('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', `compression_type=zstd,cluster_size=${clusterSize}`, f.path('src.raw'), path]);
    const node = await f.open(path, { 'read-only': true });
    t.like((await node.driver.describe!(node.driverState)).formatSpecific?.data, { 'compression-type': 'zstd' });
    t.is((await entryOf(imageOf(node), 0)).kind, 'compressed');
    sameBytes(t, await readNode(node), data);
  });
}

test('compressed writes in a zstd image read back in qemu-img, and check clean', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  const path = f.path('ours.qcow2');
  await f.create({ filename: path, size: 4 * MiB, compression_type: 'zstd' });
  const header = (await readFile(path)).subarray(0, 112);
  t.is(header.readBigUInt64BE(72) & 8n, 8n, 'incompatible bit 3: the compression type is not zlib');
  t.is(header[104], 1, 'compression type 1: zstd');
  const node = await f.open(path);
  const data = content(2 * MiB, 7);
  await node.write(0, data, { compressed: true });
  sameBytes(t, await readNode(node, 0, data.length), data);
  const entries = await Promise.all(Array.from({ length: 32 }, (_, i) => entryOf(imageOf(node), i)));
  t.true(entries.filter((e) => e.kind === 'compressed').length >= 24, 'the text clusters are stored compressed');
  await f.close();
  const report = await assertClean(t, path);
  t.true(Number(report['compressed-clusters']) >= 24);
  t.regex(await run('qemu-img', ['info', path]), /compression type: zstd/);
  await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', path, f.path('back.raw')]);
  const back = await readFile(f.path('back.raw'));
  sameBytes(t, back.subarray(0, data.length), data);
  sameBytes(t, back.subarray(data.length), Buffer.alloc(2 * MiB));
});

test('a damaged zstd frame is an I/O error naming it, as QEMU fails the read', async (t) => {
  if (!requireQemu(t)) return;
  const f = await qcow2Fixture(t);
  await writeFile(f.path('src.raw'), content(MiB, 9));
  const path = f.path('bad.qcow2');
  await run('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'compression_type=zstd', f.path('src.raw'), path]);
  const probe = await f.open(path, { 'read-only': true });
  const entry = await entryOf(imageOf(probe), 0);
  await f.close();
  t.is(entry.kind, 'compressed');
  // The frame's magic number, then its first block, overwritten.
  const file = await open(path, 'r+');
  await file.write(Buffer.alloc(64, 0xff), 0, 64, entry.host);
  await file.close();
  const node = await f.open(path, { 'read-only': true });
  const error = await t.throwsAsync(readNode(node, 0, 64 * KiB), { instanceOf: BlockIoError, message: /qcow2: Could not decompress cluster/ });
  t.is(error.errno, 'EIO');
  sameBytes(t, await readNode(node, 64 * KiB, 64 * KiB), (await readFile(f.path('src.raw'))).subarray(64 * KiB, 128 * KiB), 'the other clusters read');
  await t.throwsAsync(run('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read 0 64k', path]));
});
