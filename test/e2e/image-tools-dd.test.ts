/**
 * `blocklayer dd` next to `qemu-img dd` with the same operands, each side
 * writing into a directory of its own: exit code, output and messages, and
 * the images they make byte for byte (raw and qcow2), for block sizes that
 * are and are not powers of two, count and skip alone and together (with
 * qemu-img 7.2's reading of them), a skip past the end, a qcow2 chain as
 * input, and what qemu-img refuses. Serial, as the other CLI files.
 */
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { commandResult } from '../helpers/command-result.js';
import { blocklayerCommand } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';

/** Messages with the program's prefix as PREFIX, and without the directories. */
const message = (stderr: string, dirs: string[]): string =>
  dirs.reduce((text, dir) => text.replaceAll(`${dir}/`, ''), stderr).replace(/^(qemu-img|blocklayer dd): /gm, 'PREFIX: ');

test.serial('dd makes what qemu-img dd makes, and refuses what it refuses with its words', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-dd-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const inputs = join(dir, 'in');
  const sides = { ours: join(dir, 'ours'), theirs: join(dir, 'theirs') };
  for (const d of [inputs, ...Object.values(sides)]) await mkdir(d);
  const at = (name: string) => join(inputs, name);
  const run = (command: string, ...args: string[]) => commandResult(command, args);
  await run('qemu-img', 'create', '-q', '-f', 'raw', at('in.raw'), '1M');
  await run('qemu-io', '-f', 'raw', '-c', 'write -P 0xab 0 64k', '-c', 'write -P 0xcd 200k 5k', '-c', 'write -P 0xef 1020k 4k', at('in.raw'));
  await run('qemu-img', 'create', '-q', '-f', 'qcow2', at('base.qcow2'), '2M');
  await run('qemu-io', '-f', 'qcow2', '-c', 'write -P 1 0 1536k', at('base.qcow2'));
  await run('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', at('base.qcow2'), '-F', 'qcow2', at('top.qcow2'));
  await run('qemu-io', '-f', 'qcow2', '-c', 'write -P 2 100k 300k', '-c', 'write -z 1M 64k', at('top.qcow2'));

  // OUT stands for the output file in each side's directory.
  const cases: string[][] = [
    ['-f', 'raw', `if=${at('in.raw')}`, 'of=OUT.raw'],
    ['-f', 'raw', '-O', 'qcow2', 'bs=64k', 'count=3', 'skip=1', `if=${at('in.raw')}`, 'of=OUT.qcow2'],
    ['-f', 'raw', '-O', 'qcow2', 'bs=100000', `if=${at('in.raw')}`, 'of=OUT.qcow2'],
    ['-f', 'raw', '-O', 'raw', 'bs=1000', 'skip=7', `if=${at('in.raw')}`, 'of=OUT.raw'],
    ['-f', 'raw', 'bs=64k', 'count=4', 'skip=2', `if=${at('in.raw')}`, 'of=OUT.raw'],
    ['-f', 'raw', 'bs=64k', 'count=40', 'skip=2', `if=${at('in.raw')}`, 'of=OUT.raw'],
    ['-f', 'raw', 'bs=1k', 'count=0', `if=${at('in.raw')}`, 'of=OUT.raw'],
    ['-U', '-f', 'raw', 'bs=1.5k', 'skip=0x10', `if=${at('in.raw')}`, 'of=OUT.raw'],
    ['-f', 'raw', 'skip=2048', `if=${at('in.raw')}`, 'of=OUT.raw'],
    ['-f', 'qcow2', '-O', 'qcow2', 'bs=4k', 'skip=3', `if=${at('top.qcow2')}`, 'of=OUT.qcow2'],
    ['-f', 'qcow2', 'bs=1M', 'count=1', `if=${at('top.qcow2')}`, 'of=OUT.raw'],
    ['-f', 'raw', `if=${at('top.qcow2')}`, 'of=OUT.raw', `if=${at('in.raw')}`],
    // Reported, exit code 0, an empty output.
    ['-f', 'raw', 'skip=5000', `if=${at('in.raw')}`, 'of=OUT.raw'],
    ['-f', 'raw', 'bs=1k', 'count=0', 'skip=1', `if=${at('in.raw')}`, 'of=OUT.raw'],
    ['-f', 'raw', 'skip=1E', `if=${at('in.raw')}`, 'of=OUT.raw'],
    // Refused.
    ['-f', 'raw', `if=${at('in.raw')}`],
    ['-f', 'raw'],
    ['-f', 'raw', `if=${at('in.raw')}`, 'of=OUT.raw', 'foo=1'],
    ['-f', 'raw', `if=${at('in.raw')}`, 'of=OUT.raw', 'junk'],
    ['-f', 'raw', `if=${at('in.raw')}`, 'of=OUT.raw', '=5'],
    ['-f', 'raw', 'bs=0', `if=${at('in.raw')}`, 'of=OUT.raw'],
    ['-f', 'raw', 'bs=-1', `if=${at('in.raw')}`, 'of=OUT.raw'],
    ['-f', 'raw', 'bs=2G', `if=${at('in.raw')}`, 'of=OUT.raw'],
    ['-f', 'raw', 'bs=', `if=${at('in.raw')}`, 'of=OUT.raw'],
    ['-f', 'raw', 'count=abc', `if=${at('in.raw')}`, 'of=OUT.raw'],
    ['-f', 'raw', 'count=-1', `if=${at('in.raw')}`, 'of=OUT.raw'],
    ['-f', 'raw', 'count=99999E', `if=${at('in.raw')}`, 'of=OUT.raw'],
    ['-f', 'raw', 'skip=-1', `if=${at('in.raw')}`, 'of=OUT.raw'],
    ['-f', 'raw', '-O', 'bogus', `if=${at('in.raw')}`, 'of=OUT.raw'],
    ['-f', 'bogus', `if=${at('in.raw')}`, 'of=OUT.raw'],
    ['-f', 'raw', `if=${at('nowhere.raw')}`, 'of=OUT.raw'],
    ['-f', 'raw', `if=${at('in.raw')}`, 'of=OUT/nowhere/x.raw'],
    ['-f', 'raw', '-O', 'qcow2', `if=${at('in.raw')}`, 'of=OUT/nowhere/x.qcow2'],
  ];
  for (const [n, args] of cases.entries()) {
    const name = `out${n}`;
    const sideArgs = (side: string) => args.map((a) => a.replace('OUT', join(side, name)));
    const [command, argv] = blocklayerCommand(['dd', ...sideArgs(sides.ours)]);
    const [result, expected] = await Promise.all([commandResult(command, argv), run('qemu-img', 'dd', ...sideArgs(sides.theirs))]);
    const what = args.join(' ').replaceAll(`${inputs}/`, '');
    t.is(result.code, expected.code, `${what}: ${result.stderr}`);
    t.is(result.stdout, expected.stdout, what);
    t.is(message(result.stderr, [sides.ours, sides.theirs, inputs]), message(expected.stderr, [sides.ours, sides.theirs, inputs]), what);
    const output = args.find((a) => a.startsWith('of=OUT.'));
    if (output !== undefined && expected.code === 0) {
      const file = output.replace('of=OUT', name);
      const [ours, theirs] = await Promise.all([readFile(join(sides.ours, file)), readFile(join(sides.theirs, file))]);
      t.true(ours.equals(theirs), `${what}: the output is qemu-img's byte for byte`);
    }
  }
});
