/**
 * `--image-opts` (and convert's `--target-image-opts`): the image argument
 * is node options, not a file name; and `json:{…}` filenames, options too;
 * with `--object`, the objects such options name (an NBD client's TLS
 * credentials). Each command runs beside qemu-img with
 * the same arguments, in the same directory (or each in its own copy when
 * it writes): outputs, exit codes and messages are qemu-img's; what a
 * writing command leaves reads as qemu-img's does. Where qemu-img would
 * probe a format (no driver=), ours refuses. Serial, as the other CLI
 * files: it starts many processes.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, copyFile, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { type CommandResult, commandResult, mustSucceed } from '../helpers/command-result.js';
import { blocklayerCommand } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';
import { tempDir } from '../helpers/temp-dir.js';
import { pskDir } from '../helpers/tls-files.js';

const workDir = (t: ExecutionContext, name: string): Promise<string> => tempDir(t, `blocklayer-image-opts-${name}-`);

/**
 * base.qcow2 (4M, 1s in the first MiB), top.qcow2 over it (2s at 1M), other.qcow2
 * (4M, 3s in the first 512k), plain.raw (4M of zeroes); sub/over.qcow2 over ../base.qcow2 (4s at 2M).
 */
async function images(dir: string): Promise<void> {
  const img = (...args: string[]) => mustSucceed(dir, 'qemu-img', 'create', '-q', ...args);
  const io = (file: string, write: string) => mustSucceed(dir, 'qemu-io', '-f', 'qcow2', '-c', write, file);
  await img('-f', 'qcow2', 'base.qcow2', '4M');
  await io('base.qcow2', 'write -P 1 0 1M');
  await img('-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2');
  await io('top.qcow2', 'write -P 2 1M 1M');
  await img('-f', 'qcow2', 'other.qcow2', '4M');
  await io('other.qcow2', 'write -P 3 0 512k');
  await img('-f', 'raw', 'plain.raw', '4M');
  await mkdir(join(dir, 'sub'));
  await img('-f', 'qcow2', '-b', '../base.qcow2', '-F', 'qcow2', 'sub/over.qcow2');
  await io('sub/over.qcow2', 'write -P 4 2M 64k');
}

async function copyImages(from: string, to: string): Promise<void> {
  await mkdir(join(to, 'sub'));
  for (const name of ['base.qcow2', 'top.qcow2', 'other.qcow2', 'plain.raw', 'sub/over.qcow2']) await copyFile(join(from, name), join(to, name));
}

/** Our CLI with `args`, in `cwd`. */
function ours(args: string[], cwd: string): Promise<CommandResult> {
  const [command, argv] = blocklayerCommand(args);
  return commandResult(command, argv, cwd);
}

/** Our CLI and qemu-img with the same arguments, ours in `mine`, qemu-img's in `theirs`. */
function both(args: string[], mine: string, theirs = mine): Promise<[CommandResult, CommandResult]> {
  return Promise.all([ours(args, mine), commandResult('qemu-img', args, theirs)]);
}

/** The messages without the tools' prefixes (`qemu-img: `, `blocklayer info: `). */
const message = (stderr: string): string => stderr.replace(/^(qemu-img|blocklayer [a-z]+): /gm, '');

/** Each argument list, run in `dir` by both tools: the same exit code, output and messages. */
async function sameAsQemuImg(t: ExecutionContext, cases: string[][], dir: string): Promise<void> {
  for (const args of cases) {
    const [result, expected] = await both(args, dir);
    t.is(result.code, expected.code, `${args.join(' ')}: ${result.stderr}`);
    t.is(result.stdout, expected.stdout, args.join(' '));
    t.is(message(result.stderr), message(expected.stderr), args.join(' '));
  }
}

const TOP = 'driver=qcow2,file.filename=top.qcow2';
const TOP_FILE = 'driver=qcow2,file.driver=file,file.filename=top.qcow2';

test.serial('reading commands print what qemu-img prints for the image the options name', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await workDir(t, 'read');
  await images(dir);
  const cases = [
    ['info', '--output=json', '--backing-chain', '--image-opts', TOP],
    ['info', '--image-opts', TOP_FILE],
    ['info', '--output=json', '--image-opts', 'driver=raw,file.driver=file,file.filename=top.qcow2'],
    ['map', '--output=json', '--image-opts', TOP],
    ['check', '--output=json', '--image-opts', TOP],
    ['measure', '--output=json', '-O', 'qcow2', '--image-opts', TOP],
    ['compare', '--image-opts', TOP, 'driver=qcow2,file.filename=top.qcow2,backing.driver=qcow2,backing.file.filename=base.qcow2'],
    ['compare', '--image-opts', TOP, 'driver=qcow2,file.filename=other.qcow2'],
  ];
  for (const args of cases) {
    const [result, expected] = await both(args, dir);
    t.is(expected.code, args[0] === 'compare' && args.at(-1)!.includes('other') ? 1 : 0, `${args.join(' ')}: qemu-img: ${expected.stderr}`);
    t.is(result.code, expected.code, `${args.join(' ')}: ${result.stderr}`);
    t.is(result.stdout, expected.stdout, args.join(' '));
  }
});

test.serial('option strings qemu-img cannot use are refused as qemu-img refuses them', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await workDir(t, 'refusals');
  await images(dir);
  const cases = [
    ['info', '-f', 'qcow2', '--image-opts', TOP],
    ['info', '--image-opts', 'driver=nosuch,file.filename=top.qcow2'],
    ['info', '--image-opts', 'driver=qcow2,file.filename=nowhere.qcow2'],
    ['info', '--image-opts', 'driver=qcow2,file=top.qcow2'],
    ['map', '--image-opts', 'driver=qcow2,file.filename=top.qcow2,,x'],
    ['check', '--image-opts', 'driver=qcow2,file.filename=plain.raw'],
    ['compare', '-F', 'qcow2', '--image-opts', TOP, 'other.qcow2'],
    ['convert', '-O', 'raw', '--target-image-opts', TOP, 'driver=raw,file.filename=plain.raw'],
    ['convert', '-n', '-O', 'raw', '-f', 'qcow2', 'top.qcow2', '--target-image-opts', 'driver=raw,file.filename=plain.raw'],
  ];
  for (const args of cases) {
    const [result, expected] = await both(args, dir);
    t.not(expected.code, 0, args.join(' '));
    t.is(result.code, expected.code, args.join(' '));
    t.is(message(result.stderr), message(expected.stderr), args.join(' '));
  }
  // qemu-img would probe the format; ours needs driver=, and names the options.
  const unnamed = await ours(['info', '--image-opts', 'file.filename=top.qcow2'], dir);
  t.is(unnamed.code, 1);
  t.is(unnamed.stderr, "blocklayer info: Could not open 'file.filename=top.qcow2': the image format must be given with driver=FMT (formats are never guessed)\n");
});

test.serial('json: filenames name an image by its options, as qemu-img takes them', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await workDir(t, 'json');
  await images(dir);
  const top = 'json:{"driver": "qcow2", "file": {"driver": "file", "filename": "top.qcow2"}}';
  const cases = [
    ['info', '--output=json', '--backing-chain', top],
    ['info', '-f', 'qcow2', 'json:{"file": {"filename": "top.qcow2"}}'],
    ['info', '--output=json', '-f', 'raw', 'json:{"driver": "qcow2", "file.filename": "top.qcow2"}'],
    ['map', '--output=json', 'json:{"driver": "qcow2", "file.filename": "top.qcow2", "backing": {"driver": "qcow2", "file": {"filename": "other.qcow2"}}}'],
    ['compare', '-F', 'qcow2', top, 'top.qcow2'],
    ['compare', '-f', 'qcow2', 'other.qcow2', top],
    ['info', 'json:{"driver": "qcow2", "file": "top.qcow2"'],
    ['info', 'json:[1]'],
    ['check', 'json:{"driver": "nosuch", "file.filename": "top.qcow2"}'],
  ];
  await sameAsQemuImg(t, cases, dir);
  t.is((await ours(['convert', '-O', 'raw', top, 'ours.raw'], dir)).code, 0);
  await mustSucceed(dir, 'qemu-img', 'convert', '-O', 'raw', top, 'theirs.raw');
  t.true((await readFile(join(dir, 'ours.raw'))).equals(await readFile(join(dir, 'theirs.raw'))));
  // qemu-img would probe the format of a json: filename without a driver; ours needs one, or -f.
  const unnamed = await ours(['info', 'json:{"file": {"filename": "top.qcow2"}}'], dir);
  t.is(unnamed.code, 1);
  t.is(unnamed.stderr, 'blocklayer info: format must be given with -f\n');
});

test.serial('-U opens the image with force-share=on: options saying otherwise conflict, read-write opens are refused', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await workDir(t, 'force-share');
  await images(dir);
  const cases = [
    ['info', '-U', '--image-opts', `${TOP},force-share=on`],
    ['map', '-U', '--output=json', '--image-opts', TOP],
    ['info', '-U', '--image-opts', `${TOP},force-share=off`],
    ['info', '-U', '--image-opts', `${TOP},force-share=yes`],
    ['map', '-U', '--image-opts', `${TOP},force-share=off,nosuch=1`],
    ['measure', '-U', '-O', 'qcow2', '--image-opts', `${TOP},force-share=false`],
    ['convert', '-U', '-O', 'raw', '--image-opts', `${TOP},force-share=off`, 'never.raw'],
    ['compare', '-U', '--image-opts', `${TOP},force-share=off`, TOP],
    ['snapshot', '-U', '-l', '--image-opts', `${TOP},force-share=off`],
    // A json: filename's own force-share is not compared with -U.
    ['info', '-U', 'json:{"driver": "qcow2", "file.filename": "top.qcow2", "force-share": false}'],
    ['check', '-U', '-r', 'leaks', '-f', 'qcow2', 'top.qcow2'],
    ['bench', '-U', '-w', '-c', '1', '-f', 'qcow2', 'top.qcow2'],
  ];
  await sameAsQemuImg(t, cases, dir);
  await t.throwsAsync(access(join(dir, 'never.raw')));
});

test.serial('writing commands leave what qemu-img leaves', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const pristine = await workDir(t, 'pristine');
  await images(pristine);
  const cases: { args: string[]; image: string; format: string }[] = [
    { args: ['convert', '--image-opts', TOP, '-O', 'qcow2', 'out.qcow2'], image: 'out.qcow2', format: 'qcow2' },
    { args: ['convert', '-n', '-f', 'qcow2', 'top.qcow2', '--target-image-opts', 'driver=raw,file.filename=plain.raw'], image: 'plain.raw', format: 'raw' },
    { args: ['convert', '-n', '--image-opts', TOP, '--target-image-opts', 'driver=qcow2,file.filename=other.qcow2'], image: 'other.qcow2', format: 'qcow2' },
    // -b is relative to the directory of the image the options name.
    { args: ['rebase', '-b', '../other.qcow2', '-F', 'qcow2', '--image-opts', 'driver=qcow2,file.filename=sub/over.qcow2'], image: 'sub/over.qcow2', format: 'qcow2' },
    { args: ['resize', '--image-opts', TOP, '8M'], image: 'top.qcow2', format: 'qcow2' },
    { args: ['commit', '--image-opts', TOP], image: 'base.qcow2', format: 'qcow2' },
    { args: ['snapshot', '-c', 'one', '--image-opts', 'driver=qcow2,file.filename=other.qcow2'], image: 'other.qcow2', format: 'qcow2' },
    { args: ['amend', '-o', 'lazy_refcounts=on', '--image-opts', 'driver=qcow2,file.filename=other.qcow2'], image: 'other.qcow2', format: 'qcow2' },
    { args: ['bitmap', '--add', '--image-opts', 'driver=qcow2,file.filename=other.qcow2', 'b0'], image: 'other.qcow2', format: 'qcow2' },
  ];
  for (const { args, image, format } of cases) {
    const ours = await workDir(t, 'ours');
    const theirs = await workDir(t, 'theirs');
    await copyImages(pristine, ours);
    await copyImages(pristine, theirs);
    const [result, expected] = await both(args, ours, theirs);
    t.is(expected.code, 0, `${args.join(' ')}: qemu-img: ${expected.stderr}`);
    t.is(result.code, 0, `${args.join(' ')}: ${result.stderr}`);
    t.is(result.stdout, expected.stdout, args.join(' '));
    const raw = async (dir: string) => {
      await mustSucceed(dir, 'qemu-img', 'convert', '-f', format, '-O', 'raw', image, 'content.raw');
      return readFile(join(dir, 'content.raw'));
    };
    t.true((await raw(ours)).equals(await raw(theirs)), `${args.join(' ')}: reads as qemu-img's`);
    const info = async (dir: string) => {
      const all = JSON.parse(await mustSucceed(dir, 'qemu-img', 'info', '--output=json', '-f', format, image)) as Record<string, unknown>;
      const data = (all['format-specific'] as { data?: Record<string, unknown> } | undefined)?.data;
      return { size: all['virtual-size'], backing: all['backing-filename'], lazy: data?.['lazy-refcounts'], bitmaps: data?.bitmaps, snapshots: (all.snapshots as unknown[] | undefined)?.length };
    };
    t.deepEqual(await info(ours), await info(theirs), args.join(' '));
    if (format === 'qcow2') t.is((await commandResult('qemu-img', ['check', '-f', 'qcow2', image], ours)).code, 0, args.join(' '));
  }
});

/** nbdkit serving `data` over TLS with the PSK in `dir`, on dir/nbd.sock, until the test ends. */
async function tlsNbdkit(t: ExecutionContext, dir: string): Promise<string> {
  const socket = join(dir, 'nbd.sock');
  const server = spawn('nbdkit', ['-f', '--tls=require', `--tls-psk=${join(dir, 'keys.psk')}`, '-U', socket, 'data', '1 2 3 @0x10000 4 5 6 @0x90000 7', 'size=1M'], { stdio: 'ignore' });
  t.teardown(() => {
    server.kill();
  });
  for (let i = 0; i < 500; i++) {
    if (await access(socket).then(() => true, () => false)) return socket;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error('nbdkit did not listen');
}

test.serial('--object: an NBD export over TLS, named by its options, reads as qemu-img reads it', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'nbdkit')) return;
  const dir = await workDir(t, 'tls');
  await pskDir(dir, { qemu: randomBytes(32) });
  const socket = await tlsNbdkit(t, dir);
  const image = `driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=${socket},file.tls-creds=tls0`;
  const object = `tls-creds-psk,id=tls0,dir=${dir},endpoint=client`;
  const cases = [
    ['info', '--object', object, '--output=json', '--image-opts', image],
    ['map', '--object', object, '--output=json', '--image-opts', image],
    ['compare', '--object', object, '--image-opts', image, image],
    // Without the credentials, or with an object qemu-img does not know.
    ['info', '--image-opts', image],
    ['info', '--object', 'bogus,id=x', '--image-opts', image],
    ['compare', '--object', 'bogus,id=x', '--image-opts', image, image],
  ];
  await sameAsQemuImg(t, cases, dir);
  t.is((await ours(['convert', '--object', object, '--image-opts', image, '-O', 'raw', 'ours.raw'], dir)).code, 0);
  await mustSucceed(dir, 'qemu-img', 'convert', '--object', object, '--image-opts', image, '-O', 'raw', 'theirs.raw');
  const copied = await readFile(join(dir, 'ours.raw'));
  t.true(copied.equals(await readFile(join(dir, 'theirs.raw'))));
  t.deepEqual([...copied.subarray(0x10000, 0x10003)], [4, 5, 6]);
});
