/**
 * Byte counts on the command line (offsets, sizes, granularities) read as
 * qemu-img's cvtnum() reads them: suffixes and fractions, the range each
 * option allows, and its two kinds of message (not a size; out of range),
 * for map, convert -S and -r, bench and bitmap -g, next to qemu-img with
 * the same arguments. Serial, as the other CLI files.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { commandResult } from '../helpers/command-result.js';
import { blocklayerCommand } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';

/** The prefix (on each line) as PREFIX, no directory, and no run time. */
const normalise = (text: string, dir: string): string =>
  text
    .replaceAll(`${dir}/`, '')
    .replace(/^(qemu-img|blocklayer \w+): /gm, 'PREFIX: ')
    .replace(/Run completed in [\d.]+ seconds/, 'Run completed in N seconds');

test.serial('byte counts are read as qemu-img reads them, with its messages', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-byte-counts-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const image = join(dir, 'disk.qcow2');
  const raw = join(dir, 'disk.raw');
  await commandResult('qemu-img', ['create', '-q', '-f', 'qcow2', image, '1M']);
  await commandResult('qemu-img', ['create', '-q', '-f', 'raw', raw, '1M']);
  const cases = [
    ['map', '-f', 'qcow2', '--start-offset=1.5k', '--max-length=64k', '--output=json', image],
    ['map', '-f', 'qcow2', '--start-offset=1E', image],
    ['map', '-f', 'qcow2', '--start-offset=abc', image],
    ['map', '-f', 'qcow2', '--max-length=99999E', image],
    ['map', '-f', 'qcow2', '--max-length=-1', image],
    ['convert', '-f', 'raw', '-S', '1000', raw, join(dir, 'out.raw')],
    ['convert', '-f', 'raw', '-S', '32M', raw, join(dir, 'out.raw')],
    ['convert', '-f', 'raw', '-S', 'abc', raw, join(dir, 'out.raw')],
    ['convert', '-f', 'raw', '-S', '99999E', raw, join(dir, 'out.raw')],
    ['convert', '-f', 'raw', '-S', '16M', raw, join(dir, 'out.raw')],
    ['convert', '-f', 'raw', '-r', 'abc', raw, join(dir, 'out.raw')],
    ['convert', '-f', 'raw', '-r', '99999E', raw, join(dir, 'out.raw')],
    ['convert', '-f', 'raw', '-r', '-1', raw, join(dir, 'out.raw')],
    ['convert', '-f', 'raw', '-r', '64M', raw, join(dir, 'out.raw')],
    ['bench', '-f', 'qcow2', '-c', '100', '-s', '0', image],
    ['bench', '-f', 'qcow2', '-c', '100', '-s', '1.5k', '-S', '0x1000', '-o', '4k', image],
    ['bench', '-f', 'qcow2', '-s', '2G', image],
    ['bench', '-f', 'qcow2', '-S', 'abc', image],
    ['bench', '-f', 'qcow2', '-o', '99999E', image],
    ['bitmap', '-f', 'qcow2', '--add', '-g', 'abc', image, 'b'],
    ['bitmap', '-f', 'qcow2', '--add', '-g', '99999E', image, 'b'],
    ['bitmap', '-f', 'qcow2', '--add', '-g', '1000', image, 'b'],
  ];
  for (const args of cases) {
    const [command, argv] = blocklayerCommand(args);
    const result = await commandResult(command, argv);
    const expected = await commandResult('qemu-img', args);
    const what = args.join(' ').replaceAll(`${dir}/`, '');
    t.is(result.code, expected.code, `${what}: ${result.stderr}`);
    t.is(normalise(result.stdout, dir), normalise(expected.stdout, dir), what);
    t.is(normalise(result.stderr, dir), normalise(expected.stderr, dir), what);
  }
});
