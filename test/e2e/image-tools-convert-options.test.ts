/**
 * convert's --target-is-zero, -T and -t off next to qemu-img convert with
 * the same arguments: exit code, messages, and the target byte for byte
 * (--target-is-zero leaves what the target held where the source reads as
 * zeroes, as qemu-img does). Serial, as the other CLI files.
 */
import { randomBytes } from 'node:crypto';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { commandResult } from '../helpers/command-result.js';
import { blocklayerCommand } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';

const message = (stderr: string, dir: string): string => stderr.replaceAll(`${dir}/`, '').replace(/^(qemu-img|blocklayer convert): /gm, 'PREFIX: ');

test.serial('convert --target-is-zero, -T and -t off as qemu-img convert', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-convert-options-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const source = join(dir, 'source.raw');
  await commandResult('qemu-img', ['create', '-q', '-f', 'raw', source, '4M']);
  await commandResult('qemu-io', ['-f', 'raw', '-c', 'write -P 7 1M 1M', source]);
  // An existing target full of other data: --target-is-zero believes it reads as zeroes.
  const filled = join(dir, 'filled.raw');
  await writeFile(filled, randomBytes(4 << 20));
  const cases: string[][] = [
    ['-n', '--target-is-zero', '-f', 'raw', '-O', 'raw', source, 'OUT'],
    ['-n', '-f', 'raw', '-O', 'raw', source, 'OUT'],
    ['-n', '--target-is-zero', '-S', '0', '-f', 'raw', '-O', 'raw', source, 'OUT'],
    ['--target-is-zero', '-f', 'raw', '-O', 'raw', source, 'OUT'],
    ['-T', 'directsync', '-t', 'off', '-f', 'raw', '-O', 'raw', source, 'OUT'],
    ['-T', 'foo', '-f', 'raw', '-O', 'raw', source, 'OUT'],
  ];
  for (const [n, args] of cases.entries()) {
    const out = (side: string) => join(dir, `${side}${n}.raw`);
    await copyFile(filled, out('ours'));
    await copyFile(filled, out('theirs'));
    const [command, argv] = blocklayerCommand(['convert', ...args.map((a) => (a === 'OUT' ? out('ours') : a))]);
    const result = await commandResult(command, argv);
    const expected = await commandResult('qemu-img', ['convert', ...args.map((a) => (a === 'OUT' ? out('theirs') : a))]);
    const what = args.join(' ').replaceAll(`${dir}/`, '');
    t.is(result.code, expected.code, `${what}: ${result.stderr}`);
    t.is(message(result.stderr, dir).replaceAll('ours', 'OUT'), message(expected.stderr, dir).replaceAll('theirs', 'OUT'), what);
    t.true((await readFile(out('ours'))).equals(await readFile(out('theirs'))), `${what}: the targets differ`);
  }
  // With -B qemu-img 7.2 reports this and still exits 0, copying nothing; here it is an error.
  const backed = await commandResult(...blocklayerCommand(['convert', '-n', '--target-is-zero', '-B', source, '-F', 'raw', '-f', 'raw', '-O', 'qcow2', source, join(dir, 'x.qcow2')]));
  t.deepEqual(backed, { code: 1, stdout: '', stderr: 'blocklayer convert: Cannot use --target-is-zero when the destination image has a backing file\n' });
});
