/** planCreate / executeCreate: qemu-img create's options, size rules, Formatting line and messages. */
import { execFile } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { executeCreate, planCreate } from '../../../core/image-tools/create.js';
import { parseSize } from '../../../core/image-tools/image-access.js';
import { requirePeer } from '../../helpers/peers.js';
import { cowImages, tempDir, toolLayer } from './cow-driver.js';

const run = promisify(execFile);

test('sizes as qemu-img reads them', (t) => {
  t.is(parseSize('1024'), 1024);
  t.is(parseSize('64M'), 64 << 20);
  t.is(parseSize('1.5k'), 1536);
  t.is(parseSize('2G'), 2 ** 31);
  t.is(parseSize('10T'), 10 * 2 ** 40);
  t.is(parseSize('0x100'), 256);
  t.is(parseSize('12Q'), undefined);
  t.is(parseSize('-1'), undefined);
  t.is(parseSize(''), undefined);
});

test('raw: the Formatting line and the file are qemu-img create\'s', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  const dir = await tempDir(t);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const cases: [string, string[], string][] = [
    ['a.raw', [], '64M'],
    ['b.raw', ['preallocation=falloc'], '1M'],
    ['c.raw', [], '1000'],
    ['d.raw', ['size=2M'], ''],
  ];
  for (const [name, options, size] of cases) {
    const ours = join(dir, `ours-${name}`);
    const theirs = join(dir, `theirs-${name}`);
    const plan = await planCreate(layer, { filename: ours, format: 'raw', options, ...(size === '' ? {} : { size }) });
    await executeCreate(layer, plan);
    const args = ['create', '-f', 'raw', ...options.flatMap((o) => ['-o', o]), theirs, ...(size === '' ? [] : [size])];
    const { stdout } = await run('qemu-img', args);
    t.is(`${plan.summary}\n`, stdout.replace(theirs, ours), name);
    t.is((await stat(ours)).size, (await stat(theirs)).size, `${name}: size (rounded up to 512 as qemu-img does)`);
  }
});

test('errors, worded as qemu-img\'s', async (t) => {
  const dir = await tempDir(t);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const img = join(dir, 'x.img');
  await t.throwsAsync(planCreate(layer, { filename: img, format: 'nosuch', size: '1M' }), { message: "Unknown file format 'nosuch'" });
  await t.throwsAsync(planCreate(layer, { filename: img, format: 'null-co', size: '1M' }), {
    message: "Format driver 'null-co' does not support image creation",
  });
  await t.throwsAsync(planCreate(layer, { filename: img, format: 'raw' }), { message: `${img}: Image creation needs a size parameter` });
  await t.throwsAsync(planCreate(layer, { filename: img, format: 'raw', size: '12Q' }), { message: /^Invalid image size specified. You may use k, M, G, T, P or E suffixes for\n/ });
  await t.throwsAsync(planCreate(layer, { filename: img, format: 'raw', size: '1M', options: ['foo=bar'] }), { message: `${img}: Invalid parameter 'foo'` });
  await t.throwsAsync(planCreate(layer, { filename: img, format: 'raw', size: '1M', options: ['size=2M'] }), {
    message: `${img}: The image size must be specified only once`,
  });
  await t.throwsAsync(planCreate(layer, { filename: img, format: 'raw', size: '1M', backingFile: 'b', backingFormat: 'raw' }), {
    message: `${img}: Backing file not supported for file format 'raw'`,
  });
  await t.throwsAsync(planCreate(layer, { filename: img, format: 'cow', size: '1M', backingFile: 'b' }), {
    message: `${img}: Backing file specified without backing format`,
  });
  const plan = await planCreate(layer, { filename: join(dir, 'no', 'such', 'dir.img'), format: 'raw', size: '1M' });
  await t.throwsAsync(executeCreate(layer, plan), {
    message: `${plan.filename}: Could not create '${plan.filename}': No such file or directory`,
  });
});

test('with a backing file: the size is the backing image\'s unless given; -u does not open it', async (t) => {
  const dir = await tempDir(t);
  const layer = await toolLayer();
  t.teardown(() => layer.close());
  const base = join(dir, 'base.raw');
  await executeCreate(layer, await planCreate(layer, { filename: base, size: '3M' }));
  const top = join(dir, 'top.cow');
  const plan = await planCreate(layer, { filename: top, format: 'cow', backingFile: 'base.raw', backingFormat: 'raw', options: ['cluster_size=4k'] });
  t.is(plan.summary, `Formatting '${top}', fmt=cow size=3145728 backing_file=base.raw backing_fmt=raw cluster_size=4096`);
  await executeCreate(layer, plan);
  t.deepEqual(cowImages.get(top)?.backing, { filename: 'base.raw', format: 'raw' });
  cowImages.delete(top);
  await t.throwsAsync(planCreate(layer, { filename: top, format: 'cow', backingFile: 'missing.raw', backingFormat: 'raw' }), {
    message: new RegExp(`^${top}: Could not open '${dir}/missing.raw': .*\nCould not open backing image.$`),
  });
  await t.throwsAsync(planCreate(layer, { filename: top, format: 'cow', backingFile: 'missing.raw', backingFormat: 'raw', unsafe: true }), {
    message: `${top}: Image creation needs a size parameter`,
  });
  const unsafe = await planCreate(layer, { filename: top, format: 'cow', size: '1M', backingFile: 'missing.raw', backingFormat: 'raw', unsafe: true });
  t.is(unsafe.options.size, 1 << 20);
});
