/**
 * convert -C (copy offloading) next to qemu-img convert -C with the same
 * arguments: exit code, messages, the content (qemu-img compare), the
 * layout (qemu-img map --output=json, host offsets included) and, for
 * qcow2, qemu-img check. With -C neither tool reads the data, so runs of
 * zeroes written in the source are copied, not left out as a plain convert
 * leaves them: the layouts then differ from a plain convert's, which shows
 * that the copies were offloaded. A compressed source cannot be offloaded,
 * and both fall back to copying through buffers. Serial, as the other CLI
 * files.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { commandResult } from '../helpers/command-result.js';
import { blocklayerCommand } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** A raw source of random data, written zeroes and holes, in runs of whole 64 KiB clusters and some not. */
async function mixedSource(path: string, size: number): Promise<void> {
  const file = await open(path, 'w');
  try {
    await file.truncate(size);
    const runs: [number, 'data' | 'zeroes' | 'hole'][] = [
      [192 * KiB, 'data'],
      [128 * KiB, 'zeroes'],
      [64 * KiB, 'hole'],
      [68 * KiB, 'data'],
      [60 * KiB, 'zeroes'],
      [512 * KiB, 'hole'],
      [1 * MiB, 'data'],
      [256 * KiB, 'zeroes'],
      [36 * KiB, 'data'],
    ];
    let at = 0;
    for (const [length, kind] of runs) {
      if (kind !== 'hole') await file.write(kind === 'data' ? randomBytes(length) : Buffer.alloc(length), 0, length, at);
      at += length;
    }
  } finally {
    await file.close();
  }
}

test.serial('convert -C offloads the copy as qemu-img convert -C does', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-convert-offload-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const at = (name: string) => join(dir, name);
  await mixedSource(at('src.raw'), 4 * MiB);
  await commandResult('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', at('src.raw'), at('src.qcow2')]);
  await commandResult('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', at('src.raw'), at('compressed.qcow2')]);
  await commandResult('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', at('src.raw'), at('base.qcow2')]);
  await commandResult('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', at('base.qcow2'), '-F', 'qcow2', at('top.qcow2')]);
  await commandResult('qemu-io', ['-f', 'qcow2', '-c', 'write -P 7 64k 1M', '-c', 'write -z 2M 128k', '-c', 'write -P 9 3M 64k', at('top.qcow2')]);
  await commandResult('qemu-img', ['create', '-q', '-f', 'raw', at('small.raw'), '1M']);
  const cases: { args: string[]; format: string; offloaded?: boolean }[] = [
    { args: ['-f', 'raw', '-O', 'raw', at('src.raw')], format: 'raw', offloaded: true },
    { args: ['-f', 'raw', '-O', 'qcow2', at('src.raw')], format: 'qcow2', offloaded: true },
    { args: ['-f', 'qcow2', '-O', 'raw', at('src.qcow2')], format: 'raw' },
    { args: ['-f', 'qcow2', '-O', 'qcow2', '-o', 'cluster_size=16k', at('src.qcow2')], format: 'qcow2' },
    { args: ['-f', 'qcow2', '-O', 'qcow2', at('compressed.qcow2')], format: 'qcow2' },
    { args: ['-f', 'qcow2', '-O', 'qcow2', at('top.qcow2')], format: 'qcow2' },
    { args: ['-f', 'qcow2', '-O', 'qcow2', '-B', at('base.qcow2'), '-F', 'qcow2', at('top.qcow2')], format: 'qcow2' },
    { args: ['-f', 'raw', '-O', 'qcow2', at('small.raw'), at('src.raw')], format: 'qcow2', offloaded: true },
    { args: ['-m', '1', '-W', '-f', 'raw', '-O', 'raw', at('src.raw')], format: 'raw' },
  ];
  const map = async (format: string, path: string) => {
    const result = await commandResult('qemu-img', ['map', '--output=json', '-f', format, path]);
    return result.stdout.replaceAll(dir, 'DIR');
  };
  for (const [n, { args, format, offloaded }] of cases.entries()) {
    const what = args.join(' ').replaceAll(`${dir}/`, '');
    const ours = at(`ours${n}.${format}`);
    const theirs = at(`theirs${n}.${format}`);
    const plain = at(`plain${n}.${format}`);
    const result = await commandResult(...blocklayerCommand(['convert', '-C', ...args, ours]));
    const expected = await commandResult('qemu-img', ['convert', '-C', ...args, theirs]);
    t.deepEqual([result.code, result.stdout, result.stderr], [expected.code, expected.stdout, expected.stderr], what);
    if (result.code !== 0) continue;
    t.is((await commandResult('qemu-img', ['compare', '-f', format, '-F', format, ours, theirs])).code, 0, `${what}: content`);
    const layout = await map(format, ours);
    t.is(layout.replaceAll(`ours${n}`, 'OUT'), (await map(format, theirs)).replaceAll(`theirs${n}`, 'OUT'), `${what}: layout`);
    if (format === 'qcow2') t.is((await commandResult('qemu-img', ['check', '-q', '-f', 'qcow2', ours])).code, 0, `${what}: check`);
    if (offloaded === true) {
      await commandResult('qemu-img', ['convert', ...args, plain]);
      t.not(layout.replaceAll(`ours${n}`, 'OUT'), (await map(format, plain)).replaceAll(`plain${n}`, 'OUT'), `${what}: the zeroes were copied`);
    }
  }
});

test.serial('convert -C refuses -c and -S as qemu-img does', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-convert-offload-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await commandResult('qemu-img', ['create', '-q', '-f', 'raw', join(dir, 'src.raw'), '1M']);
  for (const extra of [['-c'], ['-S', '0'], ['-S', '64k', '-c']]) {
    const args = ['convert', '-C', ...extra, '-f', 'raw', '-O', 'qcow2', join(dir, 'src.raw'), join(dir, 'out.qcow2')];
    const result = await commandResult(...blocklayerCommand(args));
    const expected = await commandResult('qemu-img', args);
    t.is(result.code, expected.code, extra.join(' '));
    t.is(result.stderr.replace(/^blocklayer convert: /, ''), expected.stderr.replace(/^qemu-img: /, ''), extra.join(' '));
  }
});
