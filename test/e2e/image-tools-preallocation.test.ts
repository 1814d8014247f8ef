/**
 * Preallocation next to qemu-img: `create -f qcow2 -o preallocation=falloc|full`
 * and `resize --preallocation=metadata|falloc|full` (raw and qcow2; sizes
 * on and off cluster boundaries; data, zero, compressed and backing clusters
 * under the old end) give files byte for byte qemu-img's, that qemu-img
 * maps alike (reserved blocks read as holes, written ones as data) and
 * checks clean; the messages and exit codes are qemu-img's. Serial, as the
 * other CLI files.
 */
import { copyFile, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { commandResult } from '../helpers/command-result.js';
import { blocklayerCommand } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';
import { tempDir } from '../helpers/temp-dir.js';

async function ours(args: readonly string[]) {
  const [command, argv] = blocklayerCommand(args);
  return commandResult(command, argv);
}

const map = async (format: string, image: string): Promise<string> =>
  (await commandResult('qemu-img', ['map', '--output=json', '-f', format, image])).stdout;

/** Both files the same bytes, mapped alike by qemu-img, and (qcow2) clean by its check. */
async function sameImages(t: ExecutionContext, format: string, mine: string, theirs: string, what: string): Promise<void> {
  t.true((await readFile(mine)).equals(await readFile(theirs)), `${what}: the files differ`);
  t.is(await map(format, mine), await map(format, theirs), `${what}: map`);
  if (format === 'qcow2') t.is((await commandResult('qemu-img', ['check', '-q', '-f', 'qcow2', mine])).code, 0, `${what}: check`);
}

test.serial('create -f qcow2 with preallocation falloc and full: qemu-img\'s image, byte for byte', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  const dir = await tempDir(t, 'blocklayer-prealloc-');
  const [mine, theirs] = [join(dir, 'ours.qcow2'), join(dir, 'theirs.qcow2')];
  for (const [options, size] of [
    ['preallocation=falloc', '1M'],
    ['preallocation=full', '1000k'],
    ['preallocation=falloc,cluster_size=512', '3M'],
    ['preallocation=full,cluster_size=4k,refcount_bits=1', '7M'],
    ['preallocation=falloc,cluster_size=2M', '100M'],
    ['preallocation=full,refcount_bits=64', '5M'],
    ['preallocation=falloc,compat=0.10', '2M'],
    ['preallocation=falloc,lazy_refcounts=on', '1G'],
  ] as const) {
    await rm(mine, { force: true });
    await rm(theirs, { force: true });
    const [result, expected] = [await ours(['create', '-f', 'qcow2', '-o', options, mine, size]), await commandResult('qemu-img', ['create', '-f', 'qcow2', '-o', options, theirs, size])];
    t.is(result.code, 0, result.stderr);
    t.is(result.stdout.replace(mine, 'IMG'), expected.stdout.replace(theirs, 'IMG'), options);
    await sameImages(t, 'qcow2', mine, theirs, `${options} ${size}`);
  }
});

/** An image as qemu-img makes it and qemu-io writes it, copied twice the same way, so both copies start alike. */
async function twoCopies(dir: string, format: string, create: readonly string[], writes: readonly string[]): Promise<[string, string]> {
  const [original, mine, theirs] = [join(dir, `original.${format}`), join(dir, `ours.${format}`), join(dir, `theirs.${format}`)];
  for (const file of [original, mine, theirs]) await rm(file, { force: true });
  // `create`: qemu-img create's options, then the size.
  await commandResult('qemu-img', ['create', '-q', '-f', format, ...create.slice(0, -1), original, create.at(-1)!]);
  if (writes.length > 0) await commandResult('qemu-io', ['-f', format, ...writes.flatMap((w) => ['-c', w]), original]);
  await copyFile(original, mine);
  await copyFile(original, theirs);
  return [mine, theirs];
}

const RESIZES: readonly { format: string; create: readonly string[]; writes: readonly string[]; to: string }[] = [
  { format: 'raw', create: ['1M'], writes: ['write -P 1 0 1M'], to: '3M' },
  { format: 'qcow2', create: ['1M'], writes: ['write -P 1 0 1M'], to: '3M' },
  { format: 'qcow2', create: ['1000k'], writes: ['write -P 1 0 1000k'], to: '3M' },
  { format: 'qcow2', create: ['1000k'], writes: [], to: '3M' },
  { format: 'qcow2', create: ['1000k'], writes: ['write -P 1 0 1000k', 'write -z 960k 40k'], to: '3M' },
  { format: 'qcow2', create: ['1000k'], writes: ['write -c -P 1 0 64k'], to: '2M' },
  { format: 'qcow2', create: ['-o', 'cluster_size=4k', '10M'], writes: ['write -P 1 0 64k'], to: '100M' },
  { format: 'qcow2', create: ['-o', 'cluster_size=512,refcount_bits=2', '10M'], writes: ['write -P 1 0 64k', 'write -z 1M 1M'], to: '30M' },
  { format: 'qcow2', create: ['-b', 'base.raw', '-F', 'raw', '1000k'], writes: ['write -P 3 0 64k'], to: '3M' },
];

test.serial('resize --preallocation: qemu-img\'s image, byte for byte, for each mode', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await tempDir(t, 'blocklayer-prealloc-');
  await commandResult('qemu-img', ['create', '-q', '-f', 'raw', join(dir, 'base.raw'), '3M']);
  await commandResult('qemu-io', ['-f', 'raw', '-c', 'write -P 9 0 3M', join(dir, 'base.raw')]);
  for (const mode of ['metadata', 'falloc', 'full']) {
    for (const { format, create, writes, to } of RESIZES) {
      const what = `${format} ${create.join(' ')} [${writes.join('; ')}] --preallocation=${mode} ${to}`;
      const [mine, theirs] = await twoCopies(dir, format, create, writes);
      const args = ['resize', '-f', format, `--preallocation=${mode}`];
      const [result, expected] = [await ours([...args, mine, to]), await commandResult('qemu-img', [...args, theirs, to])];
      t.is(result.code, expected.code, `${what}: ${result.stderr}`);
      t.is(result.stderr.replace(/^blocklayer resize: /gm, 'qemu-img: '), expected.stderr, what);
      t.is(result.stdout, expected.stdout, what);
      await sameImages(t, format, mine, theirs, what);
    }
  }
});

test.serial('resize --preallocation: qemu-img\'s refusals, the image untouched', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  const dir = await tempDir(t, 'blocklayer-prealloc-');
  for (const [format, mode, size] of [
    ['raw', 'bogus', '3M'],
    ['qcow2', 'bogus', '3M'],
    ['raw', 'metadata', '3M'],
    ['raw', 'full', '1M'],
    ['qcow2', 'falloc', '512k'],
    ['qcow2', 'full', '+0'],
  ] as const) {
    const [mine, theirs] = await twoCopies(dir, format, ['1M'], []);
    const args = ['resize', '-f', format, `--preallocation=${mode}`];
    const [result, expected] = [await ours([...args, mine, size]), await commandResult('qemu-img', [...args, theirs, size])];
    const what = `${format} --preallocation=${mode} ${size}`;
    t.is(result.code, expected.code, what);
    t.not(expected.code, 0, what);
    t.is(result.stderr.replace(/^blocklayer resize: /gm, 'qemu-img: '), expected.stderr, what);
    await sameImages(t, format, mine, theirs, what);
  }
});
