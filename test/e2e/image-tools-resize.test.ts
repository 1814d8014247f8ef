/**
 * `blocklayer resize` next to `qemu-img resize`: the same sequence of
 * commands on two copies of a qcow2 and a raw image, each compared as it
 * goes: exit code, output, message (without the program's prefix and the
 * directory) and the image file byte for byte. Serial, as the other CLI
 * files: it starts many processes.
 */
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { type CommandResult, commandResult } from '../helpers/command-result.js';
import { blocklayerCommand } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';

async function workDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-resize-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const message = (stderr: string, dir: string): string => stderr.replaceAll(`${dir}/`, '').replace(/^(qemu-img|blocklayer resize): /gm, 'PREFIX: ');

/** Each step: the options before the file name, and the size argument(s) after it. */
const QCOW2_STEPS: [string[], string[]][] = [
  [[], ['2M']],
  [[], ['--', '-1M']],
  [[], ['-1M']],
  [['--shrink'], ['1000']],
  [[], ['+1M']],
  [[], ['0']],
  [['--shrink'], ['--', '-10M']],
  [[], ['12Q']],
  [['--shrink'], ['-x']],
  [['--shrink'], ['1536k']],
  [['-q'], ['+7M']],
  [['--shrink'], ['-512k']],
];

/** Relative sizes start from whole sectors: QEMU counts a raw file of 1000 bytes as 1024 (our raw node as 1000). */
const RAW_STEPS: [string[], string[]][] = [
  [['--shrink'], ['1000']],
  [[], ['5120']],
  [[], ['+1k']],
  [[], ['4096']],
  [['--shrink'], ['-1k']],
  [['--shrink'], ['512']],
];

async function steps(t: ExecutionContext, format: string, writes: string[], list: [string[], string[]][]): Promise<void> {
  const dir = await workDir(t);
  const [ours, theirs] = [join(dir, `ours.${format}`), join(dir, `theirs.${format}`)];
  await commandResult('qemu-img', ['create', '-q', '-f', format, theirs, '4M']);
  await commandResult('qemu-io', ['-f', format, ...writes.flatMap((w) => ['-c', w]), theirs]);
  await copyFile(theirs, ours);
  for (const [options, size] of list) {
    const [command, argv] = blocklayerCommand(['resize', '-f', format, ...options, ours, ...size]);
    const result: CommandResult = await commandResult(command, argv);
    const expected = await commandResult('qemu-img', ['resize', '-f', format, ...options, theirs, ...size]);
    const what = [...options, ...size].join(' ');
    t.is(result.code, expected.code, `${what}: ${result.stderr}`);
    t.is(result.stdout, expected.stdout, what);
    t.is(message(result.stderr, dir).replaceAll('ours.', 'x.'), message(expected.stderr, dir).replaceAll('theirs.', 'x.'), what);
    t.true((await readFile(ours)).equals(await readFile(theirs)), `${what}: the files differ`);
  }
}

test.serial('qcow2: grows, shrinks only with --shrink, refuses what qemu-img refuses, with its words', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  await steps(t, 'qcow2', ['write -P 1 0 1M', 'write -P 2 1536k 1M', 'write -P 3 3M 1M'], QCOW2_STEPS);
});

test.serial('raw: any size, shrinking with --shrink', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  await steps(t, 'raw', ['write -P 1 0 4M'], RAW_STEPS);
});
