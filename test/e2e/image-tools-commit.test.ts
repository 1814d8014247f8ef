/**
 * `blocklayer commit` next to `qemu-img commit`, each on its own copy of
 * the same chain (base ← mid ← top), with the same arguments but for the
 * copy's directory: exit code, output and message (the directory left
 * out); afterwards every image reads as qemu-img's does and passes its
 * check, the emptied image comes out byte for byte as QEMU's
 * make_completely_empty leaves it (or as its discards leave it, for v2 and
 * an image with a bitmap), and an image commit must leave alone is
 * untouched. Serial, as the other CLI files: it starts many processes.
 */
import { copyFile, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { type CommandResult, commandResult, mustSucceed } from '../helpers/command-result.js';
import { blocklayerCommand } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';
import { tempDir } from '../helpers/temp-dir.js';

const IMAGES = ['base.qcow2', 'mid.qcow2', 'top.qcow2'];

const workDir = (t: ExecutionContext, name: string): Promise<string> => tempDir(t, `blocklayer-commit-${name}-`);

/** base (4M: 1s in the first MiB), mid over it (2s from 512k for 1M), top over mid (3s at 3M, zeroes at 0) made with `topOptions`. */
async function chain(dir: string, topOptions: string): Promise<void> {
  const io = (file: string, ...writes: string[]) => mustSucceed(dir, 'qemu-io', '-f', 'qcow2', ...writes.flatMap((w) => ['-c', w]), file);
  await mustSucceed(dir, 'qemu-img', 'create', '-q', '-f', 'qcow2', 'base.qcow2', '4M');
  await io('base.qcow2', 'write -P 1 0 1M');
  await mustSucceed(dir, 'qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'mid.qcow2');
  await io('mid.qcow2', 'write -P 2 512k 1M');
  await mustSucceed(dir, 'qemu-img', 'create', '-q', '-f', 'qcow2', '-o', topOptions, '-b', 'mid.qcow2', '-F', 'qcow2', 'top.qcow2');
  await io('top.qcow2', 'write -P 3 3M 64k', 'write -z 0 64k');
}

async function copyDir(from: string, to: string): Promise<void> {
  for (const name of await readdir(from)) await copyFile(join(from, name), join(to, name));
}

const message = (stderr: string, dir: string): string => stderr.replaceAll(`${dir}/`, '').replace(/^(qemu-img|blocklayer commit): /gm, 'PREFIX: ');

async function both(args: string[], image: string, ours: string, theirs: string): Promise<[CommandResult, CommandResult]> {
  const [command, argv] = blocklayerCommand(['commit', '-f', 'qcow2', ...args, join(ours, image)]);
  return Promise.all([commandResult(command, argv), commandResult('qemu-img', ['commit', '-f', 'qcow2', ...args, join(theirs, image)])]);
}

const CASES: { name: string; args: string[]; topOptions?: string; bitmap?: boolean }[] = [
  { name: 'into the backing file, emptied as from scratch', args: [] },
  { name: 'kept (-d)', args: ['-d'] },
  { name: 'through mid into base (-b implies -d)', args: ['-b', 'base.qcow2'] },
  { name: 'rate-limited', args: ['-r', '1M', '-q'] },
  { name: 'a v2 image, emptied by discards', args: [], topOptions: 'compat=0.10' },
  { name: 'an image with a bitmap, emptied by discards', args: [], bitmap: true },
  { name: 'lazy refcounts', args: [], topOptions: 'lazy_refcounts=on' },
];

test.serial("commit leaves every image of the chain as qemu-img commit does", async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  for (const { name, args, topOptions, bitmap } of CASES) {
    const ours = await workDir(t, 'ours');
    const theirs = await workDir(t, 'theirs');
    await chain(theirs, topOptions ?? 'compat=1.1');
    if (bitmap) await mustSucceed(theirs, 'qemu-img', 'bitmap', '-f', 'qcow2', '--add', 'top.qcow2', 'b0');
    await copyDir(theirs, ours);
    const [result, expected] = await both(args, 'top.qcow2', ours, theirs);
    t.is(expected.code, 0, `${name}: qemu-img: ${expected.stderr}`);
    t.is(result.code, 0, `${name}: ${result.stderr}`);
    t.is(result.stdout, expected.stdout, name);
    for (const image of IMAGES) {
      const compare = await commandResult('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', join(ours, image), join(theirs, image)]);
      t.is(compare.stdout, 'Images are identical.\n', `${name}: ${image} reads as qemu-img's`);
      t.is((await commandResult('qemu-img', ['check', '-f', 'qcow2', join(ours, image)])).code, 0, `${name}: ${image} checks clean`);
    }
    // The committed image is emptied or kept as QEMU leaves it; an image between it and the base is untouched.
    t.true((await readFile(join(ours, 'top.qcow2'))).equals(await readFile(join(theirs, 'top.qcow2'))), `${name}: top.qcow2 differs`);
    if (args.includes('-b')) t.true((await readFile(join(ours, 'mid.qcow2'))).equals(await readFile(join(theirs, 'mid.qcow2'))), `${name}: mid.qcow2 changed`);
  }
});

test.serial("refusals are qemu-img's, and change nothing", async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const ours = await workDir(t, 'ours');
  const theirs = await workDir(t, 'theirs');
  await chain(theirs, 'compat=1.1');
  await copyDir(theirs, ours);
  const cases: [string[], string][] = [
    [['-b', 'nowhere.qcow2'], 'top.qcow2'],
    [[], 'base.qcow2'],
    [['-r', '12Q'], 'top.qcow2'],
    [[], 'nowhere.qcow2'],
  ];
  for (const [args, image] of cases) {
    const [result, expected] = await both(args, image, ours, theirs);
    const what = [...args, image].join(' ');
    t.is(result.code, 1, what);
    t.is(expected.code, 1, what);
    t.is(message(result.stderr, ours), message(expected.stderr, theirs), what);
  }
  for (const image of IMAGES) t.true((await readFile(join(ours, image))).equals(await readFile(join(theirs, image))), image);
});
