/**
 * `blocklayer bitmap` next to `qemu-img bitmap`: the same command lines on
 * two copies of an image, one after another, give the same exit codes and
 * messages, and leave images whose bitmaps QEMU reads alike (qemu-img info,
 * and each bitmap's dirty ranges through qemu-nbd -B and nbdinfo), with no
 * leak for qemu-img check.
 */
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { commandResult } from '../helpers/command-result.js';
import { blocklayerCommand } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';
import { qemuDirtyRanges, qemuImageBitmaps } from '../helpers/qemu-bitmaps.js';

const run = commandResult;

/** A tool's message without its `qemu-img: ` or `blocklayer bitmap: ` prefix, qemu-img's two-line ones joined. */
const message = (stderr: string): string => stderr.replace(/^(qemu-img|blocklayer \w+): /gm, '').trim().replaceAll('\n', ' ');

test('bitmap: the operations of qemu-img bitmap, in the order given, with its messages and exit codes', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io') || !requirePeer(t, 'qemu-nbd') || !requirePeer(t, 'nbdinfo')) return;
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-bitmap-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const source = join(dir, 'source.qcow2');
  await run('qemu-img', ['create', '-f', 'qcow2', source, '8M']);
  await run('qemu-img', ['bitmap', '--add', source, 's']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write 1M 64k', '-c', 'write 5M 4k', source]);
  const images = { qemu: join(dir, 'qemu.qcow2'), ours: join(dir, 'ours.qcow2') };
  await run('qemu-img', ['create', '-f', 'qcow2', images.qemu, '8M']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write 0 64k', images.qemu]);
  await copyFile(images.qemu, images.ours);

  const lines: [args: string[], code: number][] = [
    [['--add', 'IMG', 'b0'], 0],
    [['--add', 'IMG', 'b0'], 1],
    [['--remove', 'IMG', 'nope'], 1],
    [['IMG', 'b0'], 1],
    [['--add', '-g', '1000', 'IMG', 'b1'], 1],
    [['--add', '-g', 'abc', 'IMG', 'b1'], 1],
    [['--remove', '-g', '4096', 'IMG', 'b0'], 1],
    [['-F', 'qcow2', '--remove', 'IMG', 'b0'], 1],
    [['-b', source, '-F', 'qcow2', '--remove', 'IMG', 'b0'], 1],
    [['--merge', 'nope', 'IMG', 'b0'], 1],
    [['--merge', 's', '-b', source, '-F', 'qcow2', '--disable', 'IMG', 'b0'], 0],
    [['--add', '-g', '4k', '--disable', '--clear', 'IMG', 'b2'], 0],
    [['--enable', '--merge', 'b0', 'IMG', 'b2'], 0],
    [['--add', '--remove', '--add', '-g', '512', 'IMG', 'b3'], 0],
    [['--add', 'IMG', 'gone'], 0],
    [['--clear', '--remove', 'IMG', 'gone'], 0],
  ];
  for (const [args, code] of lines) {
    const [qemu, ours] = await Promise.all([
      run('qemu-img', ['bitmap', '-f', 'qcow2', ...args.map((a) => (a === 'IMG' ? images.qemu : a))]),
      (async () => {
        const [command, argv] = blocklayerCommand(['bitmap', '-f', 'qcow2', ...args.map((a) => (a === 'IMG' ? images.ours : a))]);
        return run(command, argv);
      })(),
    ]);
    const line = args.join(' ');
    t.is(qemu.code, code, `qemu-img bitmap ${line}: ${qemu.stderr}`);
    t.is(ours.code, code, `blocklayer bitmap ${line}: ${ours.stderr}`);
    t.is(message(ours.stderr), message(qemu.stderr), line);
  }
  t.deepEqual(await qemuImageBitmaps(images.ours), await qemuImageBitmaps(images.qemu));
  for (const name of ['b0', 'b2', 'b3']) t.deepEqual(await qemuDirtyRanges(images.ours, name), await qemuDirtyRanges(images.qemu, name), name);
  t.deepEqual(await qemuDirtyRanges(images.ours, 'b2'), [
    { offset: 1024 * 1024, length: 65536 },
    { offset: 5 * 1024 * 1024, length: 65536 },
  ], "b2 has what b0 took from the source, in b0's granules");
  const check = await run('qemu-img', ['check', '-f', 'qcow2', images.ours]);
  t.is(check.code, 0, check.stdout);
});
