/**
 * convert --salvage next to qemu-img convert --salvage, on a qcow2 whose
 * compressed cluster no longer inflates (read error EIO): exit code, the
 * warning for each unreadable 512-byte sector (offsets in the image they
 * belong to, also when several sources are concatenated), -q without
 * them, and the output byte for byte; without --salvage both fail with
 * the same message, and with -C both refuse. Serial, as the other CLI files.
 */
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { commandResult } from '../helpers/command-result.js';
import { blocklayerCommand } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';

const KiB = 1024;

/** Where the compressed cluster of guest cluster `index` lies in a qcow2 with 64 KiB clusters and one L2 table. */
async function compressedHost(path: string, index: number): Promise<number> {
  const image = await readFile(path);
  const l1 = Number(image.readBigUInt64BE(40));
  const l2 = Number(image.readBigUInt64BE(l1) & 0x00ff_ffff_ffff_fe00n);
  const entry = image.readBigUInt64BE(l2 + 8 * index);
  if ((entry & (1n << 62n)) === 0n) throw new Error(`guest cluster ${index} of ${path} is not compressed`);
  // 64 KiB clusters: the host offset is the low 62 - (16 - 8) bits.
  return Number(entry & ((1n << 54n) - 1n));
}

test.serial('convert --salvage copies what cannot be read as zeroes, as qemu-img convert --salvage', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-convert-salvage-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const at = (name: string) => join(dir, name);
  await commandResult('qemu-img', ['create', '-q', '-f', 'qcow2', at('bad.qcow2'), '1M']);
  await commandResult('qemu-io', ['-f', 'qcow2', '-c', 'write -P 5 0 128k', '-c', 'write -c -P 7 128k 64k', '-c', 'write -P 9 192k 512k', at('bad.qcow2')]);
  await commandResult('qemu-img', ['create', '-q', '-f', 'qcow2', at('good.qcow2'), `${300 * KiB + 512}`]);
  await commandResult('qemu-io', ['-f', 'qcow2', '-c', 'write -P 3 0 300k', at('good.qcow2')]);
  // The deflate stream of the compressed cluster, broken: it no longer inflates.
  const file = await open(at('bad.qcow2'), 'r+');
  await file.write(Buffer.alloc(16, 0xff), 0, 16, await compressedHost(at('bad.qcow2'), 2));
  await file.close();
  const cases: { args: string[]; format: string }[] = [
    { args: ['--salvage', '-f', 'qcow2', '-O', 'raw', at('bad.qcow2')], format: 'raw' },
    { args: ['--salvage', '-f', 'qcow2', '-O', 'qcow2', at('bad.qcow2')], format: 'qcow2' },
    { args: ['-q', '--salvage', '-f', 'qcow2', '-O', 'raw', at('bad.qcow2')], format: 'raw' },
    { args: ['--salvage', '-f', 'qcow2', '-O', 'raw', at('good.qcow2'), at('bad.qcow2')], format: 'raw' },
    { args: ['--salvage', '-m', '1', '-f', 'qcow2', '-O', 'raw', '-S', '0', at('bad.qcow2')], format: 'raw' },
  ];
  const stderrOf = (text: string) => text.replace(/^(qemu-img|blocklayer convert): /gm, 'PREFIX: ');
  for (const [n, { args, format }] of cases.entries()) {
    const what = args.join(' ').replaceAll(`${dir}/`, '');
    const ours = at(`ours${n}.${format}`);
    const theirs = at(`theirs${n}.${format}`);
    const result = await commandResult(...blocklayerCommand(['convert', ...args, ours]));
    const expected = await commandResult('qemu-img', ['convert', ...args, theirs]);
    t.is(result.code, expected.code, what);
    t.is(stderrOf(result.stderr), stderrOf(expected.stderr), what);
    t.is(result.code, 0, `${what}: ${result.stderr.slice(0, 200)}`);
    if (!args.includes('-q')) t.regex(result.stderr, /warning: error while reading offset 131072: Input\/output error\n/, what);
    t.true((await readFile(ours)).equals(await readFile(theirs)), `${what}: the outputs differ`);
  }
  // Without --salvage both stop at the request that reads the cluster, and name where it starts.
  const failed = await commandResult(...blocklayerCommand(['convert', '-f', 'qcow2', '-O', 'raw', at('bad.qcow2'), at('x.raw')]));
  const qemuFailed = await commandResult('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', at('bad.qcow2'), at('y.raw')]);
  t.deepEqual([failed.code, stderrOf(failed.stderr)], [qemuFailed.code, stderrOf(qemuFailed.stderr)]);
  t.is(stderrOf(failed.stderr), 'PREFIX: error while reading at byte 131072: Input/output error\n');
  const args = ['convert', '-C', '--salvage', '-f', 'qcow2', '-O', 'raw', at('bad.qcow2'), at('z.raw')];
  const refused = await commandResult(...blocklayerCommand(args));
  const qemuRefused = await commandResult('qemu-img', args);
  t.deepEqual([refused.code, stderrOf(refused.stderr)], [qemuRefused.code, stderrOf(qemuRefused.stderr)]);
});
