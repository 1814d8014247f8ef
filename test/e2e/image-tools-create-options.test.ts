/**
 * qemu-img create's and measure's options next to qemu-img with the same
 * arguments: the Formatting line (QEMU's option list order, the defaults it
 * shows, values as typed), the size argument as cvtnum() reads it, the
 * file's options (nocow, extent_size_hint) under raw and qcow2, QEMU's
 * version names, the options checked only when creating (after the
 * Formatting line) and their messages; what both create is byte for byte
 * the same. Serial, as the other CLI files.
 */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { commandResult } from '../helpers/command-result.js';
import { blocklayerCommand } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';
import { tempDir } from '../helpers/temp-dir.js';

/** Each line's prefix as PREFIX, the two image names as IMG. */
const normalise = (text: string, image: string): string =>
  text.replaceAll(image, 'IMG').replace(/^(qemu-img|blocklayer \w+): /gm, 'PREFIX: ');

/** Runs `args` (IMG standing for the image) with qemu-img and with ours, each on its own file. */
async function bothWays(dir: string, args: readonly string[]) {
  const ours = join(dir, 'ours.img');
  const theirs = join(dir, 'theirs.img');
  await rm(ours, { force: true });
  await rm(theirs, { force: true });
  const [command, argv] = blocklayerCommand(args.map((a) => a.replace('IMG', ours)));
  const result = await commandResult(command, argv);
  const expected = await commandResult('qemu-img', args.map((a) => a.replace('IMG', theirs)));
  return { ours, theirs, result, expected };
}

const CREATE_CASES: readonly (readonly string[])[] = [
  ['-f', 'qcow2', 'IMG', '1G'],
  ['-f', 'qcow2', '-o', 'preallocation=metadata,lazy_refcounts=on,refcount_bits=8,compat=1.1,cluster_size=4k,nocow=on,extent_size_hint=0', 'IMG', '1M'],
  ['-f', 'qcow2', '-o', 'lazy_refcounts=yes,refcount_bits=0x8,cluster_size=0x1000', 'IMG', '1M'],
  ['-f', 'qcow2', '-o', 'lazy_refcounts=true,compat=v3', 'IMG', '1M'],
  ['-f', 'qcow2', '-o', 'compat=v2', '-o', 'cluster_size=512', 'IMG', '3M'],
  ['-f', 'qcow2', '-o', 'backing_file=a,,b,backing_fmt=raw', '-u', 'IMG', '1M'],
  ['-f', 'qcow2', '-o', 'size=1k', 'IMG'],
  ['-f', 'qcow2', '-o', 'extended_l2=off,compression_type=zlib', 'IMG', '2M'],
  ['-f', 'qcow2', '-o', 'compression_type=zstd,cluster_size=8k', 'IMG', '5M'],
  ['-f', 'raw', '-o', 'preallocation=falloc,nocow=on,extent_size_hint=1M', 'IMG', '1M'],
  ['-f', 'raw', '-o', 'preallocation=full', 'IMG', '100k'],
  ['-f', 'raw', 'IMG', '0x10'],
  ['-f', 'raw', 'IMG', '1.5k'],
  // Refused while the options are read, before the Formatting line.
  ['-f', 'raw', 'IMG', '99999E'],
  ['-f', 'raw', 'IMG', '8E'],
  ['-f', 'raw', 'IMG', '1.5'],
  ['-f', 'bogus', 'IMG', '1x'],
  ['-f', 'qcow2', '-o', 'size=1k', 'IMG', '1k'],
  ['-f', 'qcow2', '-o', 'extended_l2=x', 'IMG', '1M'],
  ['-f', 'qcow2', '-o', 'cluster_size=x', 'IMG', '1M'],
  ['-f', 'qcow2', '-o', 'refcount_bits=x', 'IMG', '1M'],
  ['-f', 'raw', '-o', 'nocow=maybe', 'IMG', '1M'],
  ['-f', 'raw', '-o', 'extent_size_hint=-1', 'IMG', '1M'],
  ['-f', 'raw', '-o', 'size=-1', 'IMG'],
  // Refused while creating, after it.
  ['-f', 'qcow2', '-o', 'compat=2', 'IMG', '1M'],
  ['-f', 'qcow2', '-o', 'compression_type=lz4', 'IMG', '1M'],
  ['-f', 'qcow2', '-o', 'preallocation=bogus', 'IMG', '1M'],
  ['-f', 'qcow2', '-o', 'compat=0.10,compression_type=zstd', 'IMG', '1M'],
  ['-f', 'qcow2', '-o', 'compat=0.10,extended_l2=on', 'IMG', '1M'],
  ['-f', 'qcow2', '-o', 'lazy_refcounts=on,compat=v2', 'IMG', '1M'],
  ['-f', 'qcow2', '-o', 'extent_size_hint=5G', 'IMG', '1M'],
  ['-f', 'raw', '-o', 'extent_size_hint=5G', 'IMG', '1M'],
  ['-f', 'raw', '-o', 'preallocation=bogus', 'IMG', '1M'],
  ['-f', 'raw', '-o', 'preallocation=metadata', 'IMG', '1M'],
  ['-f', 'raw', 'IMG', '1P'],
  ['-f', 'qcow2', 'IMG', '4P'],
];

test.serial('create: the Formatting line, sizes, options and messages are qemu-img\'s; the images are byte for byte its own', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  const dir = await tempDir(t, 'blocklayer-create-options-');
  for (const args of CREATE_CASES) {
    const { ours, theirs, result, expected } = await bothWays(dir, ['create', ...args]);
    const what = args.join(' ');
    t.is(result.code, expected.code, `${what}: ${result.stderr}`);
    t.is(normalise(result.stdout, ours), normalise(expected.stdout, theirs), what);
    t.is(normalise(result.stderr, ours), normalise(expected.stderr, theirs), what);
    if (expected.code === 0) t.true((await readFile(ours)).equals(await readFile(theirs)), `${what}: the files differ`);
  }
});

test.serial('create: sizes past 2^53 are refused, naming the size and the limit (qemu-img would go on)', async (t) => {
  const dir = await tempDir(t, 'blocklayer-create-options-');
  const [command, argv] = blocklayerCommand(['create', '-f', 'qcow2', '-o', 'cluster_size=2M', join(dir, 'big.qcow2'), '8191P']);
  const result = await commandResult(command, argv);
  t.is(result.code, 1);
  t.is(result.stdout, '');
  t.is(result.stderr, 'blocklayer create: Image size 9222246136947933184 is too large: blocklayer handles images of at most 9007199254740480 bytes\n');
});

const MEASURE_CASES: readonly (readonly string[])[] = [
  ['--size', '64M', '-o', 'preallocation=off'],
  ['--size', '64M', '-o', 'preallocation=metadata'],
  ['--size', '64M', '-o', 'preallocation=falloc'],
  ['--size', '64M', '-o', 'preallocation=full'],
  ['--size', '10G', '-o', 'extended_l2=on'],
  ['--size', '64G', '-o', 'extended_l2=on,cluster_size=16k'],
  ['--size', '1P', '-o', 'extended_l2=on,cluster_size=2M'],
  ['--size', '2P', '-o', 'extended_l2=on'],
  ['--size', '1M', '-o', 'extended_l2=on,cluster_size=8k'],
  ['--size', '1M', '-o', 'compression_type=lz4,nocow=on,extent_size_hint=5G'],
  ['--size', '1M', '-o', 'compat=2'],
  ['--size', '1M', '-o', 'compat=v2'],
  ['--size', '1M', '-o', 'preallocation=bogus'],
  ['--size', '99999E'],
  ['--size', 'abc'],
  ['--size', 'abc', 'IMG'],
];

test.serial('measure -O qcow2: preallocation, extended L2 entries, version names and --size as qemu-img reads them', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  const dir = await tempDir(t, 'blocklayer-measure-options-');
  for (const args of MEASURE_CASES) {
    const { ours, theirs, result, expected } = await bothWays(dir, ['measure', '-O', 'qcow2', ...args]);
    const what = args.join(' ');
    t.is(result.code, expected.code, `${what}: ${result.stderr}`);
    t.is(normalise(result.stdout, ours), normalise(expected.stdout, theirs), what);
    t.is(normalise(result.stderr, ours), normalise(expected.stderr, theirs), what);
  }
});

test.serial('convert -o: the target is made with the same options and refusals, its errors worded as qemu-img convert\'s', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await tempDir(t, 'blocklayer-convert-options-');
  const source = join(dir, 'source.raw');
  await commandResult('qemu-img', ['create', '-q', '-f', 'raw', source, '4M']);
  await commandResult('qemu-io', ['-f', 'raw', '-c', 'write -P 7 0 1M', source]);
  for (const args of [
    ['-O', 'qcow2', '-o', 'compat=v3,nocow=on,cluster_size=16k'],
    ['-O', 'qcow2', '-o', 'compat=v2'],
    ['-O', 'qcow2', '-o', 'compat=2'],
    ['-O', 'raw', '-o', 'preallocation=bogus'],
    ['-O', 'raw', '-o', 'extent_size_hint=5G'],
  ]) {
    const { ours, theirs, result, expected } = await bothWays(dir, ['convert', '-f', 'raw', ...args, source, 'IMG']);
    const what = args.join(' ');
    t.is(result.code, expected.code, `${what}: ${result.stderr}`);
    t.is(normalise(result.stderr, ours), normalise(expected.stderr, theirs), what);
    if (expected.code === 0) t.true((await readFile(ours)).equals(await readFile(theirs)), `${what}: the files differ`);
  }
});

/** The option names of a qemu_opts_print_help listing. */
const helpNames = (text: string): string[] => [...text.matchAll(/^ {2}([\w.-]+)=</gm)].map((m) => m[1]!);

test.serial('-o help lists the options as qemu-img lays them out: the format\'s, the file\'s with a target name, amend\'s', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  const dir = await tempDir(t, 'blocklayer-option-help-');
  const target = join(dir, 'new.img');
  for (const args of [
    ['create', '-f', 'raw', '-o', 'help'],
    ['create', '-f', 'raw', '-o', '?', target],
    ['create', '-f', 'qcow2', '-o', 'help'],
    ['create', '-f', 'qcow2', '-o', 'size=1M,help', target],
    ['amend', '-f', 'qcow2', '-o', 'help'],
  ]) {
    const [command, argv] = blocklayerCommand(args);
    const [result, expected] = [await commandResult(command, argv), await commandResult('qemu-img', args)];
    const what = args.join(' ');
    t.is(result.code, 0, `${what}: ${result.stderr}`);
    t.is(result.stdout.split('\n')[0], expected.stdout.split('\n')[0], what);
    const names = helpNames(result.stdout);
    t.deepEqual(names, [...names].sort(), `${what}: sorted`);
    // Every option we take is one qemu-img takes; qemu-img has more (encryption, external data files).
    t.deepEqual(names.filter((name) => !helpNames(expected.stdout).includes(name)), [], what);
    t.is(result.stdout.includes('The protocol level may support further options.'), expected.stdout.includes('The protocol level may support further options.'), what);
    for (const line of result.stdout.split('\n').filter((l) => l.startsWith('  '))) t.regex(line, /^ {2}\S+=<[^>]+>( {0,22}| ) - \S/, what);
  }
  const raw = await commandResult(...blocklayerCommand(['create', '-f', 'raw', '-o', 'help']));
  t.deepEqual(helpNames(raw.stdout), ['size'], 'without a target, raw lists its own option only, as qemu-img');
  const amendRaw = await commandResult(...blocklayerCommand(['amend', '-f', 'raw', '-o', 'help']));
  t.is(amendRaw.code, 1);
  t.is(amendRaw.stderr, "blocklayer amend: Format driver 'raw' does not support option amendment\n");
});
