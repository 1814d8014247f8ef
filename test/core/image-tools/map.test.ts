/** mapImage against `qemu-img map` on sparse raw files, and through backing chains (cow; qcow2 once registered). */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import type { BlockLayer } from '../../../core/block-layer.js';
import { withImage } from '../../../core/image-tools/image-access.js';
import { formatMapHuman, formatMapJson, mapImage, type MapOptions } from '../../../core/image-tools/map.js';
import { requirePeer } from '../../helpers/peers.js';
import { COW_CLUSTER, cowImages, QCOW2_REGISTERED, tempDir, toolLayer } from './cow-driver.js';

const run = promisify(execFile);

async function ourMap(layer: BlockLayer, filename: string, format: string, range: MapOptions = {}): Promise<string> {
  return withImage(layer, { filename, format }, { readOnly: true }, async (node) => formatMapJson(await mapImage(node, range)));
}

async function sparseRaw(dir: string): Promise<string> {
  const image = join(dir, 'sparse.raw');
  await run('qemu-img', ['create', '-f', 'raw', image, '64M']);
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x22 10M 3M', '-c', 'write -z 20M 1M', '-c', 'write -P 0x33 63M 1M', image]);
  return image;
}

test('map --output=json of a sparse raw file is qemu-img\'s, byte for byte', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await tempDir(t);
  const image = await sparseRaw(dir);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const { stdout } = await run('qemu-img', ['map', '--output=json', '-f', 'raw', image]);
  t.is(await ourMap(layer, image, 'raw'), stdout);
  for (const range of [{ startOffset: 512 * 1024 }, { startOffset: 10 << 20, maxLength: 5 << 20 }, { startOffset: 100 << 20 }]) {
    const args = ['map', '--output=json', '-f', 'raw', `--start-offset=${range.startOffset}`];
    if (range.maxLength !== undefined) args.push(`--max-length=${range.maxLength}`);
    const theirs = await run('qemu-img', [...args, image]);
    t.is(await ourMap(layer, image, 'raw', range), theirs.stdout, JSON.stringify(range));
  }
});

test('the human map lists the data ranges as qemu-img does', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await tempDir(t);
  const image = await sparseRaw(dir);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const entries = await withImage(layer, { filename: image, format: 'raw' }, { readOnly: true }, (node) => mapImage(node));
  const { stdout } = await run('qemu-img', ['map', '-f', 'raw', image]);
  t.deepEqual(formatMapHuman(entries), { text: stdout });
});

test('an empty image maps to qemu-img\'s single empty entry', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  const dir = await tempDir(t);
  const image = join(dir, 'empty.raw');
  await run('qemu-img', ['create', '-f', 'raw', image, '0']);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const { stdout } = await run('qemu-img', ['map', '--output=json', '-f', 'raw', image]);
  t.is(await ourMap(layer, image, 'raw'), stdout);
  t.is(stdout, '[{ "start": 0, "length": 0, "depth": 0, "present": false, "zero": false, "data": false}]\n');
});

test('through a backing chain: depth of the deciding image, present only where allocated, merged runs', async (t) => {
  const dir = await tempDir(t);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const base = join(dir, 'base.cow');
  const top = join(dir, 'top.cow');
  const C = COW_CLUSTER;
  // base: 16 clusters, data in 0-1, zero in 2; top: 20 clusters (longer than base), data in 1 and 4-5, zero in 6.
  await layer.container.get<{ create(d: string, o: object): Promise<void> }>(Symbol.for('blocklayer.ImageCreator')).create('cow', { filename: base, size: 16 * C });
  await layer.container.get<{ create(d: string, o: object): Promise<void> }>(Symbol.for('blocklayer.ImageCreator')).create('cow', {
    filename: top,
    size: 20 * C,
    backing_file: 'base.cow',
    backing_fmt: 'cow',
  });
  await withImage(layer, { filename: base, format: 'cow' }, { readOnly: false }, async (node) => {
    await node.write(0, Buffer.alloc(2 * C, 1));
    await node.writeZeroes(2 * C, C);
  });
  await withImage(layer, { filename: top, format: 'cow' }, { readOnly: false }, async (node) => {
    await node.write(C, Buffer.alloc(C, 2));
    await node.write(4 * C, Buffer.alloc(2 * C, 3));
    await node.writeZeroes(6 * C, C);
  });
  const entries = await withImage(layer, { filename: top, format: 'cow' }, { readOnly: true }, (node) => mapImage(node));
  const strip = entries.map(({ filename: _filename, ...rest }) => rest);
  t.deepEqual(strip, [
    { start: 0, length: C, depth: 1, present: true, zero: false, data: true, offset: 0 },
    { start: C, length: C, depth: 0, present: true, zero: false, data: true, offset: C },
    { start: 2 * C, length: C, depth: 1, present: true, zero: true, data: false },
    { start: 3 * C, length: C, depth: 1, present: false, zero: true, data: false },
    { start: 4 * C, length: 2 * C, depth: 0, present: true, zero: false, data: true, offset: 4 * C },
    { start: 6 * C, length: C, depth: 0, present: true, zero: true, data: false },
    { start: 7 * C, length: 9 * C, depth: 1, present: false, zero: true, data: false },
    // Past the end of the backing file: zeroes, decided by the top image.
    { start: 16 * C, length: 4 * C, depth: 0, present: false, zero: true, data: false },
  ]);
  t.deepEqual(entries[0]!.filename, base);
  t.deepEqual(entries[1]!.filename, top);
  t.true(formatMapHuman(entries).text.includes(`0x1000          0x1000          0x1000          ${top}\n`));
  cowImages.delete(base);
  cowImages.delete(top);
});

test('data stored without a host offset (compressed) cannot be shown in the human map', (t) => {
  const entries = [
    { start: 0, length: 4096, depth: 0, present: true, zero: false, data: true, offset: 0, filename: 'x' },
    { start: 4096, length: 4096, depth: 0, present: true, zero: false, data: true },
  ];
  t.deepEqual(formatMapHuman(entries), {
    text: 'Offset          Length          Mapped to       File\n0               0x1000          0               x\n',
    error: 'File contains external, encrypted or compressed clusters.',
  });
});

test('qcow2 chains map as qemu-img maps them (once the qcow2 driver is registered)', async (t) => {
  if (!QCOW2_REGISTERED) {
    t.log('skipped: the qcow2 driver is not in plugin-manifest.json yet');
    t.pass();
    return;
  }
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await tempDir(t);
  const base = join(dir, 'base.qcow2');
  const mid = join(dir, 'mid.qcow2');
  const top = join(dir, 'top.qcow2');
  await run('qemu-img', ['create', '-f', 'qcow2', base, '4M']);
  await run('qemu-img', ['create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', mid]);
  await run('qemu-img', ['create', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', top, '8M']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 256k', '-c', 'write -P 2 1M 64k', base]);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -z 128k 128k', '-c', 'write -P 3 2M 64k', mid]);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 4 0 64k', '-c', 'write -c -P 5 3M 64k', top]);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const { stdout } = await run('qemu-img', ['map', '--output=json', '-f', 'qcow2', top]);
  t.is(await ourMap(layer, top, 'qcow2'), stdout);
});
