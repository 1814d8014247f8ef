/** describeImage / imageInfoList against `qemu-img info`, and backing chains (cow; qcow2 once registered). */
import { execFile } from 'node:child_process';
import { open } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import type { ImageCreator } from '../../../core/block/image-creator.js';
import { imageInfo } from '../../../core/block/node-info.js';
import { withImage } from '../../../core/image-tools/image-access.js';
import { formatInfoHuman, formatInfoJson, imageInfoList } from '../../../core/image-tools/info.js';
import { TOKENS } from '../../../core/tokens.js';
import { requirePeer } from '../../helpers/peers.js';
import { COW_CLUSTER, cowImages, QCOW2_REGISTERED, tempDir, toolLayer } from './cow-driver.js';

const run = promisify(execFile);

test('info of a raw image: the same JSON and human text as qemu-img info', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await tempDir(t);
  const image = join(dir, 'a.raw');
  await run('qemu-img', ['create', '-f', 'raw', image, '64M']);
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 1 1M 3M', image]);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const list = await withImage(layer, { filename: image, format: 'raw' }, { readOnly: true }, (node) => imageInfoList(node, false));
  t.deepEqual(list, [{ filename: image, format: 'raw', 'dirty-flag': false, 'actual-size': list[0]!['actual-size']!, 'virtual-size': 64 << 20 }]);
  const json = await run('qemu-img', ['info', '--output=json', '-f', 'raw', image]);
  t.is(formatInfoJson(list, false), json.stdout);
  const human = await run('qemu-img', ['info', '-f', 'raw', image]);
  t.is(formatInfoHuman(list), human.stdout);
  const chain = await run('qemu-img', ['info', '--output=json', '--backing-chain', '-f', 'raw', image]);
  t.is(formatInfoJson(list, true), chain.stdout);
});

test('an overlay names its backing file and format; --backing-chain lists every image; format-specific data is dumped', async (t) => {
  const dir = await tempDir(t);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const creator = layer.container.get<ImageCreator>(TOKENS.ImageCreator);
  const base = join(dir, 'base.raw');
  const top = join(dir, 'top.cow');
  await creator.create('raw', { filename: base, size: 8 * COW_CLUSTER });
  await creator.create('cow', { filename: top, size: 16 * COW_CLUSTER, backing_file: 'base.raw', backing_fmt: 'raw' });
  t.teardown(() => void cowImages.delete(top));
  const list = await withImage(layer, { filename: top, format: 'cow' }, { readOnly: true }, (node) => imageInfoList(node, true));
  t.is(list.length, 2);
  t.like(list[0], {
    filename: top,
    format: 'cow',
    'dirty-flag': false,
    'virtual-size': 16 * COW_CLUSTER,
    'cluster-size': COW_CLUSTER,
    'backing-filename': base,
    'full-backing-filename': base,
    'backing-filename-format': 'raw',
  });
  t.like(list[1], { filename: base, format: 'raw', 'virtual-size': 8 * COW_CLUSTER });
  t.is(list[1]!['backing-filename'], undefined);
  const human = formatInfoHuman(list);
  t.regex(human, new RegExp(`^image: ${top}\nfile format: cow\nvirtual size: 64 KiB \\(65536 bytes\\)\ndisk size: .+\ncluster_size: 4096\n`));
  t.true(human.includes(`backing file: ${base}\nbacking file format: raw\n`));
  t.true(
    human.includes(
      // In QDict order, as QEMU prints it.
      'Format specific information:\n    allocated clusters: 0\n    geometry:\n        cluster size: 4096\n    features:\n        [0]: cow\n        [1]: zero\n',
    ),
    human,
  );
  t.true(human.includes(`\n\nimage: ${base}\nfile format: raw\n`), 'a blank line between images');
  const json = JSON.parse(formatInfoJson(list, true)) as unknown[];
  t.is(json.length, 2);
  t.false('backing-image' in (json[0] as object));
});

test('a qcow2 image: the fields qemu-img info shows (once the qcow2 driver is registered)', async (t) => {
  if (!QCOW2_REGISTERED) {
    t.log('skipped: the qcow2 driver is not in plugin-manifest.json yet');
    t.pass();
    return;
  }
  if (!requirePeer(t, 'qemu-img')) return;
  const dir = await tempDir(t);
  const image = join(dir, 'a.qcow2');
  await run('qemu-img', ['create', '-f', 'qcow2', '-o', 'cluster_size=4k', image, '1G']);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const list = await withImage(layer, { filename: image, format: 'qcow2' }, { readOnly: true }, (node) => imageInfoList(node, false));
  const { stdout } = await run('qemu-img', ['info', '--output=json', '-f', 'qcow2', image]);
  t.deepEqual(JSON.parse(formatInfoJson(list, false)), JSON.parse(stdout));
});

test('a qcow2 backing chain: the stored backing names, as qemu-img info shows them (JSON field by field, and text)', async (t) => {
  if (!QCOW2_REGISTERED) {
    t.log('skipped: the qcow2 driver is not in plugin-manifest.json yet');
    t.pass();
    return;
  }
  if (!requirePeer(t, 'qemu-img')) return;
  const dir = await tempDir(t);
  // base.raw <- mid.qcow2 (backing 'base.raw', relative) <- top.qcow2 (backing mid's absolute name)
  await run('qemu-img', ['create', '-q', '-f', 'raw', join(dir, 'base.raw'), '4M']);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', join(dir, 'mid.qcow2')]);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', join(dir, 'mid.qcow2'), '-F', 'qcow2', join(dir, 'top.qcow2'), '8M']);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  // The image named absolutely, and relative to the working directory (QEMU joins a relative backing name to it as written).
  for (const top of [join(dir, 'top.qcow2'), relative(process.cwd(), join(dir, 'top.qcow2'))]) {
    const list = await withImage(layer, { filename: top, format: 'qcow2' }, { readOnly: true }, (node) => imageInfoList(node, true));
    const theirs = JSON.parse((await run('qemu-img', ['info', '--output=json', '--backing-chain', '-f', 'qcow2', top])).stdout) as Record<string, unknown>[];
    t.is(list.length, theirs.length);
    for (const [i, image] of theirs.entries()) {
      for (const field of ['filename', 'format', 'virtual-size', 'backing-filename', 'full-backing-filename', 'backing-filename-format']) {
        t.deepEqual((list[i] as unknown as Record<string, unknown>)[field], image[field], `${top}: image ${i}: ${field}`);
      }
    }
    t.is(list[1]!['backing-filename'], 'base.raw', 'stored relative, shown relative');
    t.is(formatInfoJson(list, true), (await run('qemu-img', ['info', '--output=json', '--backing-chain', '-f', 'qcow2', top])).stdout);
    t.is(formatInfoHuman(list), (await run('qemu-img', ['info', '--backing-chain', '-f', 'qcow2', top])).stdout);
    t.is(formatInfoJson(list.slice(0, 1), false), (await run('qemu-img', ['info', '--output=json', '-f', 'qcow2', top])).stdout);
  }
});

test('qcow2 internal snapshots: listed as qemu-img info lists them (JSON and text), v3 and v2, and in the node info QMP shows', async (t) => {
  if (!QCOW2_REGISTERED || !requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await tempDir(t);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  for (const compat of ['1.1', '0.10']) {
    const image = join(dir, `snap-${compat}.qcow2`);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `compat=${compat}`, image, '8M']);
    await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 64k', image]);
    await run('qemu-img', ['snapshot', '-c', 'first', image]);
    await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 2 0 64k', image]);
    await run('qemu-img', ['snapshot', '-c', 'a longer snapshot name', image]);
    // What a VM's snapshot has and qemu-img cannot make: a VM state size, a VM clock of 1:02:05.123 and an icount (none in the v2 one).
    const file = await open(image, 'r+');
    try {
      const header = Buffer.alloc(72);
      await file.read(header, 0, 72, 0);
      const entry = Number(header.readBigUInt64BE(64));
      const fields = Buffer.alloc(40);
      await file.read(fields, 0, 40, entry);
      fields.writeBigUInt64BE(3725_123_456_789n, 24);
      fields.writeUInt32BE(5 << 20, 32);
      await file.write(fields, 0, 40, entry);
      // The extra data (24 bytes, qemu-img writes them for v2 too): the 64-bit VM state size, which wins, and the icount.
      const extra = Buffer.alloc(24);
      await file.read(extra, 0, 24, entry + 40);
      extra.writeBigUInt64BE(7n << 30n, 0);
      extra.writeBigUInt64BE(compat === '1.1' ? 77n : 0xffffffffffffffffn, 16);
      await file.write(extra, 0, 24, entry + 40);
    } finally {
      await file.close();
    }
    const list = await withImage(layer, { filename: image, format: 'qcow2' }, { readOnly: true }, (node) => imageInfoList(node, false));
    const json = (await run('qemu-img', ['info', '--output=json', '-f', 'qcow2', image])).stdout;
    t.is(formatInfoJson(list, false), json, `compat=${compat}: JSON`);
    t.is(formatInfoHuman(list), (await run('qemu-img', ['info', '-f', 'qcow2', image])).stdout, `compat=${compat}: text`);
    t.is((JSON.parse(json) as { snapshots: unknown[] }).snapshots.length, 2);
    const shown = await withImage(layer, { filename: image, format: 'qcow2' }, { readOnly: true }, (node) => imageInfo(node, false));
    t.deepEqual(shown.snapshots, (JSON.parse(json) as { snapshots: unknown }).snapshots, `compat=${compat}: query-named-block-nodes' image`);
  }
});
