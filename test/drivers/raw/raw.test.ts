import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import type { ImageCreator } from '../../../core/block/image-creator.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { TOKENS } from '../../../core/tokens.js';
import { tempDir } from '../../helpers/temp-dir.js';

async function withBase(size = 1 << 20) {
  const layer = await createTestLayer({ plugins: ['raw'] });
  const base = await layer.graph.add({ driver: 'memory', 'node-name': 'base', size });
  const pattern = Buffer.alloc(size);
  for (let i = 0; i < size; i++) pattern[i] = (i * 13) % 256;
  await base.write(0, pattern);
  return { layer, base, pattern };
}

test('without offset/size the image is the whole file', async (t) => {
  const { layer, pattern } = await withBase();
  const raw = await layer.graph.add({ driver: 'raw', 'node-name': 'r', file: 'base' });
  t.is(raw.length, pattern.length);
  const back = Buffer.alloc(1000);
  await raw.read(5000, back);
  t.deepEqual(back, pattern.subarray(5000, 6000));
});

test('offset and size make a window: I/O is shifted and bounded', async (t) => {
  const { layer, base, pattern } = await withBase();
  const raw = await layer.graph.add({ driver: 'raw', 'node-name': 'r', file: 'base', offset: 513, size: 4096 });
  t.is(raw.length, 4096);
  const back = Buffer.alloc(4096);
  await raw.read(0, back);
  t.deepEqual(back, pattern.subarray(513, 513 + 4096));
  await raw.write(0, Buffer.alloc(10, 0xab));
  const inBase = Buffer.alloc(10);
  await base.read(513, inBase);
  t.true(inBase.every((b) => b === 0xab));
  await t.throwsAsync(raw.read(4090, Buffer.alloc(10)), { message: "Request 4090+10 is beyond the end of node 'r' (4096 bytes)" });
  await t.throwsAsync(raw.truncate(8192), { message: 'Cannot resize fixed-size raw disks' });
});

test('window checks use QEMU messages', async (t) => {
  const { layer } = await withBase(16 << 20);
  await t.throwsAsync(layer.graph.add({ driver: 'raw', 'node-name': 'r', file: 'base', size: 1 }), {
    message: 'Specified size is not multiple of 512',
  });
  await t.throwsAsync(layer.graph.add({ driver: 'raw', 'node-name': 'r', file: 'base', offset: 100000000 }), {
    message: 'Offset (100000000) cannot be greater than size of the containing file (16777216)',
  });
  await t.throwsAsync(layer.graph.add({ driver: 'raw', 'node-name': 'r', file: 'base', size: 100000000 }), {
    message:
      'The sum of offset (0) and size (100000000) has to be smaller or equal to the  actual size of the containing file (16777216)',
  });
});

test('block status comes from the file, shifted into the window', async (t) => {
  const layer = await createTestLayer({ plugins: ['raw'] });
  const base = await layer.graph.add({ driver: 'memory', 'node-name': 'base', size: 1 << 20 });
  await base.write(131072, Buffer.alloc(65536, 1));
  const raw = await layer.graph.add({ driver: 'raw', 'node-name': 'r', file: 'base', offset: 65536 });
  t.deepEqual(await raw.blockStatus(0, 196608), [
    { offset: 0, length: 65536, data: false, zero: true, allocated: true },
    { offset: 65536, length: 65536, data: true, zero: false, allocated: true },
    { offset: 131072, length: 65536, data: false, zero: true, allocated: true },
  ]);
});

test('truncate without a fixed size resizes the file', async (t) => {
  const { layer, base } = await withBase(65536);
  const raw = await layer.graph.add({ driver: 'raw', 'node-name': 'r', file: 'base', offset: 4096 });
  await raw.truncate(100000);
  t.is(base.length, 104096);
  t.is(raw.length, 100000);
});

test('write-zeroes and discard pass through to the file', async (t) => {
  const layer = await createTestLayer({ plugins: ['raw'] });
  const base = await layer.graph.add({ driver: 'memory', 'node-name': 'base', size: 1 << 20, discard: 'unmap' });
  const raw = await layer.graph.add({ driver: 'raw', 'node-name': 'r', file: 'base', discard: 'unmap' });
  await raw.write(0, Buffer.alloc(1 << 20, 1));
  await raw.writeZeroes(0, 65536, { mayUnmap: true });
  await raw.discard(65536, 65536);
  const status = await base.blockStatus(0, 196608);
  t.deepEqual(status, [
    { offset: 0, length: 131072, data: false, zero: true, allocated: true },
    { offset: 131072, length: 65536, data: true, zero: false, allocated: true },
  ]);
});

test('raw images are created as files of the given size', async (t) => {
  const layer = await createTestLayer({ plugins: ['raw', 'file'] });
  const dir = await tempDir(t, 'blocklayer-raw-');
  const creator = layer.container.get<ImageCreator>(TOKENS.ImageCreator);
  await creator.create('raw', { filename: join(dir, 'a.raw'), size: 10 << 20 });
  t.is((await stat(join(dir, 'a.raw'))).size, 10 << 20);
  await t.throwsAsync(creator.create('raw', { filename: join(dir, 'b.raw') }), { message: "Parameter 'size' is missing" });
});

test('creating an image over a file a node has open is refused (it would truncate it)', async (t) => {
  const layer = await createTestLayer({ plugins: ['raw', 'file'] });
  const dir = await tempDir(t, 'blocklayer-raw-');
  const creator = layer.container.get<ImageCreator>(TOKENS.ImageCreator);
  const path = join(dir, 'in-use.raw');
  await creator.create('raw', { filename: path, size: 1 << 20 });
  await layer.graph.add({ driver: 'raw', 'node-name': 'disk', file: { driver: 'file', filename: path } });
  await t.throwsAsync(creator.create('raw', { filename: path, size: 4096 }), {
    message: `Could not create '${path}': the image is open as node '#block001'`,
  });
  t.is((await stat(path)).size, 1 << 20);
});
