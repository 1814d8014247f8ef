/**
 * `blocklayer bitmap` next to `qemu-img bitmap`, and `convert --bitmaps`
 * next to `qemu-img convert --bitmaps`: the same command lines give the
 * same exit codes and messages, and leave images whose bitmaps QEMU reads
 * alike (qemu-img info, and each bitmap's dirty ranges through qemu-nbd -B
 * and nbdinfo), with no leak for qemu-img check.
 */
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
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

test('convert --bitmaps copies the persistent bitmaps as qemu-img convert does, with its refusals and warnings', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io') || !requirePeer(t, 'qemu-nbd') || !requirePeer(t, 'nbdinfo')) return;
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-convert-bitmaps-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const source = join(dir, 'source.qcow2');
  await run('qemu-img', ['create', '-f', 'qcow2', source, '8M']);
  await run('qemu-img', ['bitmap', '--add', source, 'b0']);
  await run('qemu-img', ['bitmap', '--add', '-g', '4k', '--disable', source, 'b1']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write 1M 64k', '-c', 'write 3M 4k', source]);
  await run('qemu-img', ['bitmap', '--enable', source, 'b1']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write 6M 4k', source]);
  // An image whose bitmaps a crash left in use.
  const broken = join(dir, 'broken.qcow2');
  await copyFile(source, broken);
  const bytes = await readFile(broken);
  const extension = bytes.indexOf(Buffer.from([0x23, 0x85, 0x28, 0x75]));
  const directory = Number(bytes.readBigUInt64BE(extension + 8 + 16));
  for (let at = directory; at < bytes.length && bytes.readUInt8(at + 16) === 1; at += Math.ceil((24 + bytes.readUInt16BE(at + 18)) / 8) * 8) {
    bytes.writeUInt32BE(bytes.readUInt32BE(at + 12) | 1, at + 12);
  }
  await writeFile(broken, bytes);
  const raw = join(dir, 'plain.raw');
  await run('qemu-img', ['create', '-f', 'raw', raw, '8M']);

  const lines: [args: string[], code: number][] = [
    [['--bitmaps', '-f', 'qcow2', '-O', 'qcow2', source, 'OUT1'], 0],
    [['--bitmaps', '-f', 'qcow2', '-O', 'qcow2', source, 'OUT9'], 0],
    // Into an image that has them already: the data is written (and recorded by its bitmaps), then the copy fails.
    [['--bitmaps', '-n', '-f', 'qcow2', '-O', 'qcow2', source, 'OUT9'], 1],
    [['--bitmaps', '-f', 'qcow2', '-O', 'raw', source, 'OUT2'], 1],
    [['--bitmaps', '-f', 'qcow2', '-O', 'qcow2', '-o', 'compat=0.10', source, 'OUT3'], 1],
    [['--bitmaps', '-f', 'raw', '-O', 'qcow2', raw, 'OUT4'], 1],
    [['--bitmaps', '-f', 'qcow2', '-O', 'qcow2', broken, 'OUT5'], 1],
    [['--bitmaps', '--skip-broken-bitmaps', '-f', 'qcow2', '-O', 'qcow2', broken, 'OUT6'], 0],
    [['--skip-broken-bitmaps', '-f', 'qcow2', '-O', 'qcow2', source, 'OUT7'], 1],
  ];
  const out = (side: string, arg: string) => (arg.startsWith('OUT') ? join(dir, `${side}-${arg}.qcow2`) : arg);
  for (const [args, code] of lines) {
    const qemu = await run('qemu-img', ['convert', ...args.map((a) => out('qemu', a))]);
    const [command, argv] = blocklayerCommand(['convert', ...args.map((a) => out('ours', a))]);
    const ours = await run(command, argv);
    const line = args.join(' ');
    t.is(qemu.code, code, `qemu-img convert ${line}: ${qemu.stderr}`);
    t.is(ours.code, code, `blocklayer convert ${line}: ${ours.stderr}`);
    t.is(message(ours.stderr.replaceAll('blocklayer convert: warning: ', 'qemu-img: warning: ')), message(qemu.stderr), line);
  }
  for (const name of ['OUT1', 'OUT6', 'OUT9']) {
    t.deepEqual(await qemuImageBitmaps(out('ours', name)), await qemuImageBitmaps(out('qemu', name)), name);
    const check = await run('qemu-img', ['check', '-f', 'qcow2', out('ours', name)]);
    t.is(check.code, 0, check.stdout);
  }
  for (const bitmap of ['b0', 'b1']) {
    t.deepEqual(await qemuDirtyRanges(out('ours', 'OUT1'), bitmap), await qemuDirtyRanges(source, bitmap), bitmap);
    t.deepEqual(await qemuDirtyRanges(out('ours', 'OUT9'), bitmap), await qemuDirtyRanges(out('qemu', 'OUT9'), bitmap), `${bitmap} after -n`);
  }
  t.deepEqual(await qemuDirtyRanges(out('ours', 'OUT1'), 'b1'), [{ offset: 6 * 1024 * 1024, length: 4096 }]);
});
