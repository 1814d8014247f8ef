/**
 * `blocklayer amend` next to `qemu-img amend` with the same arguments, on
 * copies of one image qemu-img made and qemu-io wrote: upgrades and
 * downgrades (zero clusters turned into data or unallocated clusters,
 * snapshot entries given v3 extra data), lazy refcounts on and off, the
 * the refcount width, the size, zstd images, and every refusal: files byte for byte
 * qemu-img's, mapped alike and clean, messages and exit codes its own.
 * Then where blocklayer differs on purpose: a snapshot's data kept where
 * QEMU zeroes it, and a downgrade with bitmaps refused. Serial, as the
 * other CLI files.
 */
import { copyFile, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { commandResult } from '../helpers/command-result.js';
import { blocklayerCommand } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';
import { tempDir } from '../helpers/temp-dir.js';

async function ours(args: readonly string[]) {
  const [command, argv] = blocklayerCommand(args);
  return commandResult(command, argv);
}

interface Case {
  /** qemu-img create's options, then the size. */
  create: readonly string[];
  /** qemu-io commands, then qemu-img snapshot -c names, on the image before it is copied. */
  writes?: readonly string[];
  snapshots?: readonly string[];
  amend: readonly string[];
}

/** The image made as `c` says, and two copies of it, made the same way. */
async function copies(dir: string, c: Case): Promise<[string, string]> {
  const [original, mine, theirs] = ['original', 'ours', 'theirs'].map((name) => join(dir, `${name}.qcow2`)) as [string, string, string];
  for (const file of [original, mine, theirs]) await rm(file, { force: true });
  await commandResult('qemu-img', ['create', '-q', '-f', 'qcow2', ...c.create.slice(0, -1), original, c.create.at(-1)!]);
  if ((c.writes ?? []).length > 0) await commandResult('qemu-io', ['-f', 'qcow2', ...(c.writes ?? []).flatMap((w) => ['-c', w]), original]);
  for (const name of c.snapshots ?? []) await commandResult('qemu-img', ['snapshot', '-c', name, original]);
  await copyFile(original, mine);
  await copyFile(original, theirs);
  return [mine, theirs];
}

const normalise = (text: string): string => text.replace(/^(qemu-img|blocklayer amend): /gm, 'PREFIX: ').replace(/Try '(qemu-img|blocklayer) --help'/, 'Try --help');

const map = async (image: string): Promise<string> => (await commandResult('qemu-img', ['map', '--output=json', '-f', 'qcow2', image])).stdout;

const CASES: readonly Case[] = [
  { create: ['-o', 'compat=0.10', '1M'], writes: ['write -P 1 0 64k'], amend: ['-o', 'compat=1.1'] },
  { create: ['-o', 'compat=0.10,cluster_size=4k', '1M'], writes: ['write -P 1 0 64k'], amend: ['-o', 'compat=v3'] },
  { create: ['-o', 'compat=0.10', '1M'], writes: ['write -P 1 0 64k'], snapshots: ['s1', 's2'], amend: ['-o', 'compat=1.1'] },
  { create: ['-o', 'compat=0.10', '1M'], amend: ['-o', 'compat=1.1,lazy_refcounts=on'] },
  { create: ['1M'], writes: ['write -P 1 0 64k'], amend: ['-o', 'compat=0.10'] },
  { create: ['1M'], writes: ['write -P 1 0 64k', 'write -z 64k 64k', 'write -z 512k 64k'], amend: ['-o', 'compat=0.10'] },
  { create: ['-b', 'base.raw', '-F', 'raw', '1M'], writes: ['write -P 1 0 64k', 'write -z 64k 64k', 'write -z 512k 64k'], amend: ['-o', 'compat=v2'] },
  { create: ['1M'], writes: ['write -P 1 0 64k'], snapshots: ['s1'], amend: ['-o', 'compat=0.10'] },
  { create: ['-o', 'lazy_refcounts=on', '1M'], writes: ['write -P 1 0 64k'], amend: ['-o', 'compat=0.10'] },
  { create: ['-o', 'lazy_refcounts=on', '1M'], writes: ['write -P 1 0 64k'], amend: ['-o', 'lazy_refcounts=off'] },
  { create: ['1M'], amend: ['-o', 'lazy_refcounts=on'] },
  { create: ['1M'], writes: ['write -z 0 64k'], snapshots: ['s1'], amend: ['-o', 'compat=0.10'] },
  { create: ['-b', 'base.raw', '-F', 'raw', '1M'], writes: ['write -z 0 64k'], snapshots: ['s1'], amend: ['-o', 'compat=0.10'] },
  { create: ['1M'], writes: ['write -P 1 0 64k'], amend: ['-o', 'refcount_bits=1'] },
  { create: ['1M'], writes: ['write -P 1 0 64k'], snapshots: ['s1'], amend: ['-o', 'refcount_bits=2'] },
  { create: ['-o', 'cluster_size=512', '64M'], writes: ['write -P 1 0 8M'], amend: ['-o', 'refcount_bits=1'] },
  { create: ['-o', 'cluster_size=512,refcount_bits=1', '64M'], writes: ['write -P 1 0 8M'], amend: ['-o', 'refcount_bits=64'] },
  { create: ['-o', 'refcount_bits=8', '1M'], writes: ['write -P 1 0 64k'], amend: ['-o', 'refcount_bits=16,compat=0.10'] },
  { create: ['1M'], amend: ['-o', 'size=3M'] },
  { create: ['1M'], writes: ['write -P 1 0 1M'], amend: ['-o', 'size=512k', '-o', 'refcount_bits=16'] },
  // zstd: kept by every change, and a downgrade goes back to zlib while nothing is compressed.
  { create: ['-o', 'compression_type=zstd', '1M'], writes: ['write -c -P 3 0 64k'], amend: ['-o', 'lazy_refcounts=on'] },
  { create: ['-o', 'compression_type=zstd', '1M'], writes: ['write -c -P 3 0 64k'], amend: ['-o', 'refcount_bits=4'] },
  { create: ['-o', 'compression_type=zstd', '1M'], writes: ['write -P 1 0 64k', 'write -z 512k 64k'], amend: ['-o', 'compat=0.10'] },
  { create: ['-o', 'compression_type=zstd', '1M'], writes: ['write -P 1 0 64k', 'write -c -P 3 128k 64k'], amend: ['-o', 'compat=0.10'] },
  // Refusals, as qemu-img's.
  { create: ['-o', 'compat=0.10', '1M'], amend: ['-o', 'lazy_refcounts=on'] },
  { create: ['-o', 'refcount_bits=8', '1M'], amend: ['-o', 'compat=0.10'] },
  { create: ['1M'], amend: ['-o', 'cluster_size=4k'] },
  { create: ['1M'], amend: ['-o', 'nocow=on'] },
  { create: ['1M'], amend: ['-o', 'compat=0.10,cluster_size=4k'] },
  { create: ['1M'], amend: ['-o', 'compat=bogus'] },
  { create: ['1M'], amend: ['-o', 'refcount_bits=3'] },
  { create: ['1M'], amend: ['-o', 'size=1000'] },
  { create: ['1M'], amend: ['-o', 'backing_file=x'] },
  { create: ['1M'], amend: ['-o', 'data_file=x'] },
  { create: ['1M'], amend: ['-o', 'data_file_raw=on'] },
  { create: ['1M'], amend: ['-o', 'lazy_refcounts=maybe'] },
  { create: ['1M'], writes: ['write -P 1 0 64k'], snapshots: ['s1'], amend: ['-o', 'refcount_bits=1'] },
  { create: ['1M'], writes: ['write -P 1 0 64k'], snapshots: ['s1'], amend: ['-o', 'size=2M'] },
  { create: ['1M'], amend: [] },
];

test.serial('amend: qemu-img\'s image, byte for byte, and its messages', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await tempDir(t, 'blocklayer-amend-');
  await commandResult('qemu-img', ['create', '-q', '-f', 'raw', join(dir, 'base.raw'), '1M']);
  await commandResult('qemu-io', ['-f', 'raw', '-c', 'write -P 9 0 1M', join(dir, 'base.raw')]);
  for (const c of CASES) {
    const what = `${c.create.join(' ')} [${(c.writes ?? []).join('; ')}] snapshots [${(c.snapshots ?? []).join(' ')}]: amend ${c.amend.join(' ')}`;
    const [mine, theirs] = await copies(dir, c);
    const [result, expected] = [
      await ours(['amend', '-f', 'qcow2', ...c.amend, mine]),
      await commandResult('qemu-img', ['amend', '-f', 'qcow2', ...c.amend, theirs]),
    ];
    t.is(result.code, expected.code, `${what}: ${result.stderr}`);
    t.is(normalise(result.stderr), normalise(expected.stderr), what);
    t.is(result.stdout, expected.stdout, what);
    t.true((await readFile(mine)).equals(await readFile(theirs)), `${what}: the files differ`);
    t.is(await map(mine), await map(theirs), `${what}: map`);
    t.is((await commandResult('qemu-img', ['check', '-q', '-f', 'qcow2', mine])).code, 0, `${what}: check`);
  }
});

test.serial('amend: a downgrade keeps the data of snapshots that share a zeroed cluster (QEMU 7.2 writes zeroes over it)', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await tempDir(t, 'blocklayer-amend-');
  const [mine] = await copies(dir, { create: ['1M'], writes: ['write -P 1 0 256k'], snapshots: ['s1'], amend: [] });
  await commandResult('qemu-io', ['-f', 'qcow2', '-c', 'write -z 64k 64k', mine]);
  const original = join(dir, 'before.qcow2');
  await copyFile(mine, original);
  const result = await ours(['amend', '-f', 'qcow2', '-o', 'compat=0.10', mine]);
  t.is(result.code, 0, result.stderr);
  t.is((await commandResult('qemu-img', ['check', '-q', '-f', 'qcow2', mine])).code, 0, 'clean');
  t.is((await commandResult('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'qcow2', original, mine])).code, 0, 'the image reads as before');
  for (const [image, raw] of [[original, 'before.raw'], [mine, 'after.raw']] as const) {
    await commandResult('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', '-l', 's1', image, join(dir, raw)]);
  }
  t.true((await readFile(join(dir, 'after.raw'))).equals(await readFile(join(dir, 'before.raw'))), 'the snapshot reads as before');
  t.regex((await commandResult('qemu-img', ['info', mine])).stdout, /compat: 0\.10/);
});

test.serial('amend: what blocklayer refuses where QEMU goes on, with a message saying so', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  const dir = await tempDir(t, 'blocklayer-amend-');
  const bitmaps = join(dir, 'bitmaps.qcow2');
  await commandResult('qemu-img', ['create', '-q', '-f', 'qcow2', bitmaps, '1M']);
  await commandResult('qemu-img', ['bitmap', '--add', bitmaps, 'b0']);
  const result = await ours(['amend', '-f', 'qcow2', '-o', 'compat=0.10', bitmaps]);
  t.is(result.stderr, "blocklayer amend: blocklayer's qcow2 driver cannot downgrade an image with persistent bitmaps (remove them first)\n");
  // Opened for writing, the image had its bitmaps marked in use and stored again: still v3, with them, clean.
  const info = JSON.parse((await commandResult('qemu-img', ['info', '--output=json', '-f', 'qcow2', bitmaps])).stdout) as {
    'format-specific': { data: { compat: string; bitmaps: { name: string; flags: string[] }[] } };
  };
  t.is(info['format-specific'].data.compat, '1.1');
  t.deepEqual(info['format-specific'].data.bitmaps.map((b) => [b.name, b.flags]), [['b0', ['auto']]]);
  t.is((await commandResult('qemu-img', ['check', '-q', '-f', 'qcow2', bitmaps])).code, 0);
  const raw = join(dir, 'disk.raw');
  await commandResult('qemu-img', ['create', '-q', '-f', 'raw', raw, '1M']);
  const [mineRaw, theirsRaw] = [await ours(['amend', '-f', 'raw', '-o', 'size=2M', raw]), await commandResult('qemu-img', ['amend', '-f', 'raw', '-o', 'size=2M', raw])];
  t.is(mineRaw.code, theirsRaw.code);
  t.is(normalise(mineRaw.stderr), normalise(theirsRaw.stderr));
});
