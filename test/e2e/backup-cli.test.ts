/** `blocklayer backup`, run as a user runs it; qemu-io writes the source, qemu-img compares the copy. */
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { type CommandResult, commandResult } from '../helpers/command-result.js';
import { blocklayerCommand, ROOT } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';

const run = promisify(execFile);
const SIZE = 64 << 20;

function cli(args: string[]): Promise<CommandResult> {
  const [command, argv] = blocklayerCommand(args);
  return commandResult(command, argv);
}

/** A fresh directory with a 64 MiB raw image: patterns at the start, in the middle and at the end, holes elsewhere. */
async function sourceImage(): Promise<{ dir: string; src: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-backup-'));
  const src = join(dir, 'src.raw');
  await run('qemu-img', ['create', '-f', 'raw', src, String(SIZE)]);
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x22 10M 3M', '-c', 'write -P 0x33 63M 1M', src]);
  return { dir, src };
}

async function compare(a: string, b: string): Promise<string> {
  const { stdout } = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', a, b]);
  return stdout.trim();
}

const SUMMARY = /^backup of (\S+) to (\S+): (\d+) bytes copied in \d+\.\d+ s \(\d+ MiB\/s\)\n$/;

test('a full backup copies the image, prints one summary line and exits 0', async (t) => {
  if (!requirePeer(t, 'qemu-io') || !requirePeer(t, 'qemu-img')) return;
  const { dir, src } = await sourceImage();
  const tgt = join(dir, 'tgt.raw');
  const result = await cli(['backup', src, tgt, '--no-progress']);
  t.is(result.code, 0, result.stderr);
  t.is(result.stderr, '');
  const match = SUMMARY.exec(result.stdout);
  t.truthy(match, result.stdout);
  t.deepEqual(match?.slice(1), [src, tgt, String(SIZE)]);
  t.is(await compare(src, tgt), 'Images are identical.');
  t.is((await stat(tgt)).size, SIZE);
  await rm(dir, { recursive: true, force: true });
});

test('--mode existing writes into an existing image; --sync top without a backing file copies everything', async (t) => {
  if (!requirePeer(t, 'qemu-io') || !requirePeer(t, 'qemu-img')) return;
  const { dir, src } = await sourceImage();
  const tgt = join(dir, 'existing.raw');
  await run('qemu-img', ['create', '-f', 'raw', tgt, String(SIZE)]);
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 20M 2M', tgt]);
  const result = await cli(['backup', src, tgt, '--mode', 'existing', '--sync', 'top', '--source-format', 'raw', '--format', 'raw']);
  t.is(result.code, 0, result.stderr);
  t.deepEqual(SUMMARY.exec(result.stdout)?.slice(1), [src, tgt, String(SIZE)]);
  t.is(await compare(src, tgt), 'Images are identical.', 'the old data at 20M was overwritten (zeroed)');
  await rm(dir, { recursive: true, force: true });
});

test('a missing source: the error on stderr, nothing on stdout, exit 1', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-backup-'));
  const missing = join(dir, 'nonexistent.raw');
  const result = await cli(['backup', missing, join(dir, 'tgt.raw')]);
  t.is(result.code, 1);
  t.is(result.stdout, '');
  t.is(result.stderr, `blocklayer backup: Could not open '${missing}': No such file or directory\n`);
  t.is(await stat(join(dir, 'tgt.raw')).catch(() => undefined), undefined, 'no target was created');
  await rm(dir, { recursive: true, force: true });
});

test('--mode existing with a missing target: QEMU\'s error, exit 1', async (t) => {
  if (!requirePeer(t, 'qemu-io') || !requirePeer(t, 'qemu-img')) return;
  const { dir, src } = await sourceImage();
  const missing = join(dir, 'missing.raw');
  const result = await cli(['backup', src, missing, '--mode', 'existing']);
  t.is(result.code, 1);
  t.is(result.stdout, '');
  t.is(result.stderr, `blocklayer backup: Could not open '${missing}': No such file or directory\n`);
  await rm(dir, { recursive: true, force: true });
});

test('a failing drive-backup is reported as the command error (sync none needs a target format with backing files)', async (t) => {
  if (!requirePeer(t, 'qemu-io') || !requirePeer(t, 'qemu-img')) return;
  const { dir, src } = await sourceImage();
  const result = await cli(['backup', src, join(dir, 'tgt.raw'), '--sync', 'none']);
  t.is(result.code, 1);
  t.is(result.stderr, "blocklayer backup: Backing file not supported for file format 'raw'\n");
  const format = await cli(['backup', src, join(dir, 'tgt.img'), '--format', 'nosuch']);
  t.is(format.code, 1);
  t.is(format.stderr, "blocklayer backup: Unknown file format 'nosuch'\n");
  await rm(dir, { recursive: true, force: true });
});

test('the source itself as the target is refused, and the source stays intact', async (t) => {
  if (!requirePeer(t, 'qemu-io') || !requirePeer(t, 'qemu-img')) return;
  const { dir, src } = await sourceImage();
  const link = join(dir, 'link.raw');
  await symlink(src, link);
  for (const mode of ['absolute-paths', 'existing']) {
    const result = await cli(['backup', src, link, '--mode', mode]);
    t.is(result.code, 1);
    t.is(result.stderr, `blocklayer backup: '${link}' is the source image itself\n`);
  }
  const { stdout } = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x22 10M 3M', src]);
  t.regex(stdout, /read 3145728\/3145728 bytes/);
  await rm(dir, { recursive: true, force: true });
});

test('SIGINT cancels the job: "cancelled" on stderr, exit 1', async (t) => {
  if (!requirePeer(t, 'qemu-io') || !requirePeer(t, 'qemu-img')) return;
  const { dir, src } = await sourceImage();
  const tgt = join(dir, 'tgt.raw');
  const [command, argv] = blocklayerCommand(['backup', src, tgt, '--speed', '4M']);
  const child = spawn(command, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  // The target exists once drive-backup ran, and the SIGINT handler is installed before that.
  for (let i = 0; i < 800 && (await stat(tgt).catch(() => undefined)) === undefined; i++) await new Promise((r) => setTimeout(r, 50));
  t.truthy(await stat(tgt), 'the backup started');
  child.kill('SIGINT');
  t.is(await exited, 1);
  t.is(stdout, '');
  t.is(stderr, 'blocklayer backup: cancelled\n');
  await rm(dir, { recursive: true, force: true });
});

test('backup --help describes every option; a bad --speed is refused', async (t) => {
  const help = await cli(['backup', '--help']);
  t.is(help.code, 0);
  t.regex(help.stdout, /^Usage: blocklayer backup \[options\] <source> <target>/);
  for (const option of ['--source-format', '--format', '--sync', '--speed', '--mode', '--no-progress']) {
    t.regex(help.stdout, new RegExp(`\\n  ${option} `), option);
  }
  for (const word of ['full', 'top', 'none', 'absolute-paths', 'existing', 'Ctrl-C']) t.true(help.stdout.includes(word), word);
  const top = await cli(['--help']);
  t.regex(top.stdout, /\n {2}backup \[options\] <source> <target> /);
  const speed = await cli(['backup', 'a', 'b', '--speed', 'fast']);
  t.is(speed.code, 1);
  t.regex(speed.stderr, /--speed .*'fast' is invalid/);
});
