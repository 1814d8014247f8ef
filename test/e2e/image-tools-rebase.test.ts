/**
 * `blocklayer rebase` next to `qemu-img rebase`, each on its own copy of the
 * same images, with the same arguments but for the copy's directory: the
 * exit code and message (the directory left out) are qemu-img's; a safe rebase leaves an image
 * that reads as before, passes `qemu-img check`, names the same backing
 * file and maps as qemu-img's does (host offsets included); an unsafe one
 * leaves the same bytes. Serial, as the other CLI files: it starts many
 * processes.
 */
import { copyFile, mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { type CommandResult, commandResult, mustSucceed } from '../helpers/command-result.js';
import { blocklayerCommand } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';
import { tempDir } from '../helpers/temp-dir.js';

const workDir = (t: ExecutionContext, name: string): Promise<string> => tempDir(t, `blocklayer-rebase-${name}-`);

async function qemu(cwd: string, command: string, ...args: string[]): Promise<CommandResult> {
  return commandResult(command, args, cwd);
}

/**
 * The images every case starts from (names relative to the directory):
 * base (4M: 1s in the first MiB, 4s at 2M), mid over base (2s across 512k
 * to 1.5M), top over mid (3s at 3M, 7s at 2M+64k), short (1M of 5s),
 * over-short (4M over short, 6s at 3.5M), alone (no backing, 9s in the first
 * 64k), other (4M, 8s from 1M+512k on for 1M), a raw image, and
 * sub/over over ../base.
 */
async function images(dir: string): Promise<void> {
  const img = (...args: string[]) => mustSucceed(dir, 'qemu-img', 'create', '-q', '-f', 'qcow2', ...args);
  const io = (file: string, ...writes: string[]) => mustSucceed(dir, 'qemu-io', '-f', 'qcow2', ...writes.flatMap((w) => ['-c', w]), file);
  await img('base.qcow2', '4M');
  await io('base.qcow2', 'write -P 1 0 1M', 'write -P 4 2M 512k');
  await img('-b', 'base.qcow2', '-F', 'qcow2', 'mid.qcow2');
  await io('mid.qcow2', 'write -P 2 512k 1M');
  await img('-b', 'mid.qcow2', '-F', 'qcow2', 'top.qcow2');
  await io('top.qcow2', 'write -P 3 3M 64k', 'write -P 7 2112k 4k');
  await img('short.qcow2', '1M');
  await io('short.qcow2', 'write -P 5 0 1M');
  await img('-b', 'short.qcow2', '-F', 'qcow2', 'over-short.qcow2', '4M');
  await io('over-short.qcow2', 'write -P 6 3584k 64k');
  await img('alone.qcow2', '4M');
  await io('alone.qcow2', 'write -P 9 0 64k');
  await img('other.qcow2', '4M');
  await io('other.qcow2', 'write -P 8 1536k 1M');
  await mustSucceed(dir, 'qemu-img', 'create', '-q', '-f', 'raw', 'plain.raw', '4M');
  await mkdir(join(dir, 'sub'));
  await img('-b', '../base.qcow2', '-F', 'qcow2', 'sub/over.qcow2');
  await io('sub/over.qcow2', 'write -P 10 1M 128k');
}

async function copyTree(from: string, to: string): Promise<void> {
  for (const entry of await readdir(from, { withFileTypes: true })) {
    if (entry.isDirectory()) {
      await mkdir(join(to, entry.name));
      await copyTree(join(from, entry.name), join(to, entry.name));
    } else {
      await copyFile(join(from, entry.name), join(to, entry.name));
    }
  }
}

/** qemu-img's messages without its `qemu-img: ` prefix, ours without `blocklayer rebase: `, both without `dir/`; usage hints left out. */
const message = (stderr: string, dir: string): string =>
  stderr
    .replaceAll(`${dir}/`, '')
    .replace(/^(qemu-img|blocklayer rebase): /gm, '')
    .replace(/^Try 'qemu-img --help'.*\n/m, '');

/** Both tools with `args`, the image (the last one) in `ours` and `theirs`. */
async function both(args: string[], ours: string, theirs: string): Promise<[CommandResult, CommandResult]> {
  const image = args.at(-1)!;
  const [command, argv] = blocklayerCommand(['rebase', ...args.slice(0, -1), join(ours, image)]);
  return Promise.all([commandResult(command, argv), commandResult('qemu-img', ['rebase', ...args.slice(0, -1), join(theirs, image)])]);
}

interface Case {
  name: string;
  args: string[];
  /** The image the case changes, checked afterwards when the rebase succeeds. */
  image: string;
}

const SAFE: Case[] = [
  { name: 'onto an image further down its chain', args: ['-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2'], image: 'top.qcow2' },
  { name: 'onto an image outside its chain', args: ['-b', 'other.qcow2', '-F', 'qcow2', 'top.qcow2'], image: 'top.qcow2' },
  { name: 'onto nothing', args: ['-b', '', 'top.qcow2'], image: 'top.qcow2' },
  { name: 'an image with no backing file onto one', args: ['-b', 'base.qcow2', '-F', 'qcow2', 'alone.qcow2'], image: 'alone.qcow2' },
  { name: 'from a backing file shorter than the image', args: ['-b', 'base.qcow2', '-F', 'qcow2', 'over-short.qcow2'], image: 'over-short.qcow2' },
  { name: 'onto a backing file shorter than the image', args: ['-b', 'short.qcow2', '-F', 'qcow2', 'top.qcow2'], image: 'top.qcow2' },
  { name: "relative to the image's directory", args: ['-b', '../other.qcow2', '-F', 'qcow2', 'sub/over.qcow2'], image: 'sub/over.qcow2' },
];

test.serial('a safe rebase keeps what the image reads and leaves what qemu-img rebase leaves', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const pristine = await workDir(t, 'pristine');
  await images(pristine);
  for (const { name, args, image } of SAFE) {
    const ours = await workDir(t, 'ours');
    const theirs = await workDir(t, 'theirs');
    await copyTree(pristine, ours);
    await copyTree(pristine, theirs);
    const [result, expected] = await both(['-f', 'qcow2', ...args], ours, theirs);
    t.is(expected.code, 0, `${name}: qemu-img: ${expected.stderr}`);
    t.is(result.code, 0, `${name}: ${result.stderr}`);
    t.is(result.stdout, '', name);
    const compare = await qemu(ours, 'qemu-img', 'compare', '-f', 'qcow2', '-F', 'qcow2', join(pristine, image), image);
    t.is(compare.stdout, 'Images are identical.\n', `${name}: reads as before`);
    const check = await qemu(ours, 'qemu-img', 'check', '-f', 'qcow2', image);
    t.is(check.code, 0, `${name}: ${check.stdout}`);
    const info = (dir: string) => mustSucceed(dir, 'qemu-img', 'info', '--output=json', '-f', 'qcow2', image);
    const backing = (text: string) => {
      const { 'backing-filename': file, 'backing-filename-format': format } = JSON.parse(text) as Record<string, unknown>;
      return { file, format };
    };
    t.deepEqual(backing(await info(ours)), backing(await info(theirs)), `${name}: names the same backing file`);
    const map = (dir: string) => mustSucceed(dir, 'qemu-img', 'map', '--output=json', '-f', 'qcow2', image);
    t.is(await map(ours), await map(theirs), `${name}: maps as qemu-img's`);
  }
});

test.serial('an unsafe rebase changes the name only, byte for byte as qemu-img does', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const pristine = await workDir(t, 'pristine');
  await images(pristine);
  for (const args of [['-b', 'nowhere.qcow2', '-F', 'qcow2'], ['-b', 'other.qcow2', '-F', 'raw'], ['-b', ''], []]) {
    const ours = await workDir(t, 'ours');
    const theirs = await workDir(t, 'theirs');
    await copyTree(pristine, ours);
    await copyTree(pristine, theirs);
    const [result, expected] = await both(['-f', 'qcow2', '-u', ...args, 'top.qcow2'], ours, theirs);
    t.is(result.code, 0, result.stderr);
    t.is(expected.code, 0, expected.stderr);
    t.true((await readFile(join(ours, 'top.qcow2'))).equals(await readFile(join(theirs, 'top.qcow2'))), args.join(' '));
  }
});

test.serial("refusals are qemu-img's, and leave the image as it was", async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const ours = await workDir(t, 'ours');
  const theirs = await workDir(t, 'theirs');
  await images(ours);
  await copyTree(ours, theirs);
  const before = await readFile(join(ours, 'top.qcow2'));
  const cases = [
    ['-f', 'qcow2', 'top.qcow2'],
    ['-f', 'qcow2', '-b', 'base.qcow2', '-F', 'bogus', 'top.qcow2'],
    ['-f', 'qcow2', '-b', 'nowhere.qcow2', '-F', 'qcow2', 'top.qcow2'],
    ['-f', 'qcow2', '-u', '-b', 'base.qcow2', 'top.qcow2'],
    ['-f', 'qcow2', '-b', 'base.qcow2', 'top.qcow2'],
    ['-f', 'qcow2', '-b', 'nowhere.qcow2', 'top.qcow2'],
    ['-f', 'qcow2', '-u', '-b', 'nowhere.qcow2', 'top.qcow2'],
    ['-f', 'raw', '-b', 'base.qcow2', '-F', 'qcow2', 'plain.raw'],
    ['-f', 'raw', '-u', '-b', 'base.qcow2', '-F', 'qcow2', 'plain.raw'],
    ['-f', 'qcow2', '-u', '-b', 'base.qcow2', '-F', 'qcow2', 'nowhere.qcow2'],
  ];
  for (const args of cases) {
    const [result, expected] = await both(args, ours, theirs);
    t.is(result.code, 1, args.join(' '));
    t.is(expected.code, 1, args.join(' '));
    t.is(message(result.stderr, ours), message(expected.stderr, theirs), args.join(' '));
  }
  t.true((await readFile(join(ours, 'top.qcow2'))).equals(before));
});
