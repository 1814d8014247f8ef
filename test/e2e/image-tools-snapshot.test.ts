/**
 * `blocklayer snapshot` next to `qemu-img snapshot`, each on its own copy
 * of the same images: after every step of a sequence (create, guest writes
 * by qemu-io, writes through each tool's own bench, apply by name and by
 * id, delete) the two files are byte for byte the same but for the
 * snapshots' dates, `qemu-img check` finds ours clean, and both read alike;
 * for qcow2 v3 with a compressed cluster, v2, 512-byte clusters, lazy
 * refcounts, and an overlay with a persistent bitmap (which -a is refused
 * on). Then the refusals, with qemu-img's words and exit codes.
 * qemu-img 7.2's snapshot has no -f (it probes); ours needs it.
 */
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { commandResult } from '../helpers/command-result.js';
import { blocklayerCommand } from '../helpers/daemons.js';
import { requirePeer } from '../helpers/peers.js';

/** The file with every snapshot's date (seconds and nanoseconds) zeroed: the one thing two runs cannot share. */
async function withoutDates(path: string): Promise<Buffer> {
  const file = await readFile(path);
  const count = file.readUInt32BE(60);
  let at = Number(file.readBigUInt64BE(64));
  for (let i = 0; i < count; i++) {
    at = Math.ceil(at / 8) * 8;
    file.fill(0, at + 16, at + 24);
    at += 40 + file.readUInt32BE(at + 36) + file.readUInt16BE(at + 12) + file.readUInt16BE(at + 14);
  }
  return file;
}

/** Output and messages with the program's prefix and the dates made alike, without the directory. */
const normalise = (text: string, dir: string): string =>
  text
    .replaceAll(`${dir}/`, '')
    .replace(/^(qemu-img|blocklayer snapshot): /gm, 'PREFIX: ')
    .replaceAll(/'(qemu-img|blocklayer) --help'/g, "'PROGRAM --help'")
    .replaceAll(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/g, 'DATE');

/** qemu-img create's -o; an overlay of a backing file with a persistent bitmap, which -a is refused on. */
const VARIANTS: Record<string, { options: string; overlayWithBitmap?: boolean }> = {
  v3: { options: 'cluster_size=64k' },
  v2: { options: 'compat=0.10' },
  'cluster_size=512': { options: 'cluster_size=512' },
  'lazy refcounts': { options: 'lazy_refcounts=on' },
  'an overlay with a bitmap': { options: 'cluster_size=64k', overlayWithBitmap: true },
};

for (const [variant, { options, overlayWithBitmap = false }] of Object.entries(VARIANTS)) {
  test.serial(`${variant}: every step leaves the file qemu-img snapshot leaves`, async (t) => {
    if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
    const dir = await mkdtemp(join(tmpdir(), 'blocklayer-snapshot-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const base = join(dir, 'base.qcow2');
    const ours = join(dir, 'ours.qcow2');
    const theirs = join(dir, 'theirs.qcow2');
    const backing = join(dir, 'backing.qcow2');
    await commandResult('qemu-img', ['create', '-q', '-f', 'qcow2', backing, '4M']);
    await commandResult('qemu-io', ['-f', 'qcow2', '-c', 'write -P 5 0 4M', backing]);
    await commandResult('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', options, ...(overlayWithBitmap ? ['-b', backing, '-F', 'qcow2'] : []), base, '4M']);
    if (overlayWithBitmap) await commandResult('qemu-img', ['bitmap', '-f', 'qcow2', '--add', base, 'bitmap0']);
    const writes = ['write -P 1 0 1M', 'write -z 3M 64k', ...(variant === 'v2' ? [] : ['write -c -P 2 2M 128k'])];
    await commandResult('qemu-io', ['-f', 'qcow2', ...writes.flatMap((w) => ['-c', w]), base]);
    // A name that is not UTF-8 (Latin-1 'été'): every table rewritten later must keep its bytes.
    await commandResult('bash', ['-c', `qemu-img snapshot -c "$(printf '\\351t\\351')" '${base}'`]);
    await copyFile(base, ours);
    await copyFile(base, theirs);
    const both = async (what: string, ourArgs: string[], theirArgs: string[], theirTool = 'qemu-img'): Promise<void> => {
      const [command, argv] = blocklayerCommand(ourArgs);
      const result = await commandResult(command, argv);
      const expected = await commandResult(theirTool, theirArgs);
      t.is(result.code, expected.code, `${what}: ${result.stderr}`);
      t.is(normalise(result.stdout, dir).replace(/Run completed in [\d.]+/, ''), normalise(expected.stdout, dir).replace(/Run completed in [\d.]+/, ''), what);
      t.is(normalise(result.stderr, dir), normalise(expected.stderr, dir), what);
      t.true((await withoutDates(ours)).equals(await withoutDates(theirs)), `${what}: the files differ`);
      t.is((await commandResult('qemu-img', ['check', '-q', '-f', 'qcow2', ours])).code, 0, `${what}: qemu-img check`);
      t.is((await commandResult('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'qcow2', ours, theirs])).code, 0, `${what}: contents`);
    };
    const step = (...args: string[]) => both(args.join(' '), ['snapshot', '-f', 'qcow2', ...args, ours], ['snapshot', ...args, theirs]);
    const guestWrite = async (write: string) => {
      for (const image of [ours, theirs]) await commandResult('qemu-io', ['-f', 'qcow2', '-c', write, image]);
    };
    // Writes through each tool's own driver: after a snapshot they must copy what the snapshot shares.
    const benchWrite = (...args: string[]) => {
      const bench = ['bench', '-f', 'qcow2', '-w', '-d', '1', ...args];
      return both(`bench ${args.join(' ')}`, [...bench, ours], [...bench, theirs]);
    };

    await step('-c', 'first');
    await guestWrite('write -P 7 512k 1M');
    await step('-c', 'second');
    await benchWrite('-c', '24', '-s', '32k', '-S', '96k', '-o', '16k', '--pattern=9');
    await step('-l');
    await step('-a', 'first');
    const applied = (await commandResult('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'qcow2', base, ours])).code === 0;
    t.is(applied, !overlayWithBitmap, 'the first snapshot reads as the image did (unless refused)');
    await step('-c', 'second');
    await step('-d', 'second');
    await benchWrite('-c', '8', '-s', '64k', '-o', '1M', '--pattern=3');
    await step('-a', '2');
    await step('-d', 'first');
    await step('-c', 'n'.repeat(300));
    await step('-c', 'été');
    await step('-l');
    await step('-d', 'second');
    await step('-l');
  });
}

test.serial('refusals are qemu-img snapshot’s', async (t) => {
  if (!requirePeer(t, 'qemu-img')) return;
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-snapshot-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const image = join(dir, 'disk.qcow2');
  const raw = join(dir, 'disk.raw');
  await commandResult('qemu-img', ['create', '-q', '-f', 'qcow2', image, '1M']);
  await commandResult('qemu-img', ['create', '-q', '-f', 'raw', raw, '1M']);
  await commandResult('qemu-img', ['snapshot', '-c', 'kept', image]);
  const cases: [string, string[]][] = [
    ['qcow2', ['-a', 'missing', image]],
    ['qcow2', ['-d', 'missing', image]],
    ['qcow2', ['-d', '1', image]],
    ['qcow2', ['-c', 'a', '-d', 'b', image]],
    ['qcow2', ['-l', '-l', image]],
    ['qcow2', ['-U', '-c', 'x', image]],
    ['qcow2', ['-U', '-l', image]],
    ['qcow2', [image]],
    ['qcow2', ['-l', join(dir, 'missing.qcow2')]],
    ['raw', ['-c', 'x', raw]],
    ['raw', ['-a', 'x', raw]],
    ['raw', ['-d', 'x', raw]],
    ['raw', ['-l', raw]],
  ];
  for (const [format, args] of cases) {
    const [command, argv] = blocklayerCommand(['snapshot', '-f', format, ...args]);
    const result = await commandResult(command, argv);
    const expected = await commandResult('qemu-img', ['snapshot', ...args]);
    const what = args.join(' ').replaceAll(`${dir}/`, '');
    // qemu-img probes a raw image and warns that it did: the rest of what it says is compared.
    const expectedErr = normalise(expected.stderr, dir).replaceAll(/WARNING: Image format was not specified[^]*?explicitly to remove the restrictions\.\n/g, '');
    t.is(result.code, expected.code, `${what}: ${result.stderr}`);
    t.is(normalise(result.stdout, dir), normalise(expected.stdout, dir), what);
    t.is(normalise(result.stderr, dir), expectedErr, what);
  }
  t.is((await commandResult('qemu-img', ['check', '-q', '-f', 'qcow2', image])).code, 0);
});

test.serial('convert -l copies a snapshot as qemu-img convert -l does', async (t) => {
  if (!requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const dir = await mkdtemp(join(tmpdir(), 'blocklayer-snapshot-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const image = join(dir, 'disk.qcow2');
  const raw = join(dir, 'disk.raw');
  await commandResult('qemu-img', ['create', '-q', '-f', 'qcow2', image, '4M']);
  await commandResult('qemu-img', ['create', '-q', '-f', 'raw', raw, '1M']);
  await commandResult('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 1M', image]);
  await commandResult('qemu-img', ['snapshot', '-c', 'one', image]);
  await commandResult('qemu-io', ['-f', 'qcow2', '-c', 'write -P 2 512k 1M', '-c', 'write -z 3M 64k', image]);
  await commandResult('qemu-img', ['snapshot', '-c', 'two', image]);
  // A name that is another snapshot's id: a bare -l finds the id first.
  await commandResult('qemu-io', ['-f', 'qcow2', '-c', 'write -P 3 0 64k', image]);
  await commandResult('qemu-img', ['snapshot', '-c', '1', image]);
  await commandResult('qemu-io', ['-f', 'qcow2', '-c', 'write -P 4 2M 64k', image]);
  const cases: [string, string[]][] = [
    ['qcow2', ['-l', 'snapshot.name=one']],
    ['qcow2', ['-l', 'snapshot.id=2']],
    ['qcow2', ['-l', 'snapshot.id=3,snapshot.name=1']],
    ['qcow2', ['-l', '1']],
    ['qcow2', ['-l', 'two']],
    ['qcow2', ['-O', 'qcow2', '-l', 'one']],
    ['qcow2', ['-l', 'snapshot.id=1,snapshot.name=two']],
    ['qcow2', ['-l', 'snapshot.id=9']],
    ['qcow2', ['-l', 'snapshot.name=']],
    ['qcow2', ['-l', 'nope']],
    ['qcow2', ['-l', 'snapshot.foo=1']],
    ['raw', ['-l', 'one']],
  ];
  for (const [n, [format, args]] of cases.entries()) {
    const source = format === 'raw' ? raw : image;
    const out = (side: string) => join(dir, `${side}${n}.out`);
    const [command, argv] = blocklayerCommand(['convert', '-f', format, ...args, source, out('ours')]);
    const result = await commandResult(command, argv);
    const expected = await commandResult('qemu-img', ['convert', '-f', format, ...args, source, out('theirs')]);
    const what = args.join(' ');
    t.is(result.code, expected.code, `${what}: ${result.stderr}`);
    t.is(normalise(result.stderr.replace(/^blocklayer convert: /gm, 'PREFIX: '), dir), normalise(expected.stderr, dir), what);
    if (expected.code !== 0) continue;
    const compared = await commandResult('qemu-img', ['compare', '-q', '-f', args.includes('qcow2') ? 'qcow2' : 'raw', '-F', args.includes('qcow2') ? 'qcow2' : 'raw', out('ours'), out('theirs')]);
    t.is(compared.code, 0, `${what}: the copies differ`);
    const [ourMap, theirMap] = await Promise.all(
      [out('ours'), out('theirs')].map(async (file) => (await commandResult('qemu-img', ['map', '--output=json', '-f', args.includes('qcow2') ? 'qcow2' : 'raw', file])).stdout),
    );
    t.is(ourMap, theirMap, `${what}: the layouts differ`);
  }
});
