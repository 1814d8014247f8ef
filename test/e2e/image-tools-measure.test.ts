/**
 * `blocklayer measure` next to `qemu-img measure` with the same arguments:
 * exit code, output (human and JSON) and message, for empty images of many
 * sizes and qcow2 options, for a backing chain, a sparse raw image and an
 * image with a persistent bitmap as sources, and for what qemu-img refuses.
 * Serial, as the other CLI files: it starts many processes.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { commandResult } from '../helpers/command-result.js';
import { blocklayerCommand } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';

/** Messages with the program's prefix (on each line qemu-img prefixes) as PREFIX, and without the directory. */
const message = (stderr: string, dir: string): string => stderr.replaceAll(`${dir}/`, '').replace(/^(qemu-img|blocklayer measure): /gm, 'PREFIX: ');

test.serial("measure prints what qemu-img measure prints", async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-measure-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const at = (name: string) => join(dir, name);
  const run = (command: string, ...args: string[]) => commandResult(command, args);
  await run('qemu-img', 'create', '-q', '-f', 'qcow2', at('base.qcow2'), '64M');
  await run('qemu-io', '-f', 'qcow2', '-c', 'write -P 1 0 3M', '-c', 'write -P 1 40M 100k', at('base.qcow2'));
  await run('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', at('base.qcow2'), '-F', 'qcow2', at('top.qcow2'));
  await run('qemu-io', '-f', 'qcow2', '-c', 'write -P 2 1M 3M', '-c', 'write -z 0 512k', '-c', 'write -P 2 63M 1k', at('top.qcow2'));
  await run('qemu-img', 'create', '-q', '-f', 'raw', at('sparse.raw'), '100M');
  await run('qemu-io', '-f', 'raw', '-c', 'write -P 3 5M 1M', '-c', 'write -z 20M 1M', '-c', 'write -P 3 99M 4k', at('sparse.raw'));
  await run('qemu-img', 'create', '-q', '-f', 'qcow2', at('bitmaps.qcow2'), '1G');
  await run('qemu-img', 'bitmap', '-f', 'qcow2', '--add', at('bitmaps.qcow2'), 'first');
  await run('qemu-img', 'bitmap', '-f', 'qcow2', '--add', '-g', '4k', at('bitmaps.qcow2'), 'a-longer-bitmap-name');

  const cases = [
    ['--size', '10G', '-O', 'qcow2'],
    ['--size', '10G', '-O', 'qcow2', '-o', 'cluster_size=4k,refcount_bits=1'],
    ['--size', '7T', '-O', 'qcow2', '-o', 'cluster_size=2M,refcount_bits=64'],
    ['--size', '1000', '-O', 'qcow2', '-o', 'cluster_size=512'],
    ['--size', '1000', '-O', 'raw'],
    ['--size', '1G'],
    ['--output=json', '--size', '1G', '-O', 'qcow2', '-o', 'compat=0.10'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'preallocation=metadata', '-o', 'lazy_refcounts=on'],
    ['--output=json', '-f', 'qcow2', '-O', 'qcow2', at('top.qcow2')],
    ['-f', 'qcow2', '-O', 'qcow2', '-o', 'cluster_size=512', at('top.qcow2')],
    ['-f', 'qcow2', '-O', 'qcow2', '-o', 'backing_file=x.qcow2,backing_fmt=qcow2', at('top.qcow2')],
    ['-f', 'qcow2', at('top.qcow2')],
    ['-f', 'raw', '-O', 'qcow2', at('sparse.raw')],
    ['-f', 'raw', '-O', 'qcow2', '-o', 'compat=0.10', at('sparse.raw')],
    ['-f', 'qcow2', '-O', 'qcow2', at('bitmaps.qcow2')],
    ['--output=json', '-f', 'qcow2', '-O', 'qcow2', '-o', 'cluster_size=4k', at('bitmaps.qcow2')],
    ['-f', 'qcow2', '-O', 'qcow2', '-o', 'compat=0.10', at('bitmaps.qcow2')],
    // Refused.
    ['-O', 'qcow2', '--size', '10G', '-f', 'qcow2', at('top.qcow2')],
    ['-O', 'qcow2'],
    ['--size', '1Q', '-O', 'qcow2'],
    ['--size', '1G', '-O', 'null-co'],
    ['--size', '1G', '-O', 'file'],
    ['--size', '1G', '-O', 'bogus'],
    ['--size', '1G', '-O', 'raw', '-o', 'foo=1'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'cluster_size=3'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'refcount_bits=3'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'compat=0.10,refcount_bits=1'],
    ['--size', '100T', '-O', 'qcow2', '-o', 'cluster_size=512'],
    ['-f', 'qcow2', '-O', 'qcow2', at('nowhere.qcow2')],
    // The source is opened before the output format is looked at.
    ['-f', 'qcow2', '-O', 'bogus', at('nowhere.qcow2')],
    ['-f', 'qcow2', '-O', 'null-co', '-o', 'foo=1', at('nowhere.qcow2')],
    ['-f', 'qcow2', '-O', 'bogus', at('top.qcow2')],
  ];
  for (const args of cases) {
    const [command, argv] = blocklayerCommand(['measure', ...args]);
    const [result, expected] = await Promise.all([commandResult(command, argv), run('qemu-img', 'measure', ...args)]);
    const what = args.join(' ').replaceAll(`${dir}/`, '');
    t.is(result.code, expected.code, `${what}: ${result.stderr}`);
    t.is(result.stdout, expected.stdout, what);
    t.is(message(result.stderr, dir), message(expected.stderr, dir), what);
  }
});
