/**
 * Our NBD server against the peers as oracles: nbdinfo sees what it sees
 * on qemu-storage-daemon, nbdinfo --map and qemu-img map agree with
 * qemu-img map of the image itself, qemu-io writes and reads patterns,
 * qemu-img compare and nbdcopy go both ways, several clients at once.
 */
import { readFile } from 'node:fs/promises';
import test from 'ava';
import { requirePeer } from '../../helpers/peers.js';
import { exportImage, MiB, ok, rawImage, run, serverFixture } from './fixture.js';

interface MapEntry {
  start: number;
  length: number;
  data: boolean;
  zero: boolean;
  present: boolean;
}

const mapOf = async (args: string[]): Promise<MapEntry[]> =>
  (JSON.parse(await ok('qemu-img', ['map', '--output=json', ...args])) as MapEntry[]).map(({ start, length, data, zero, present }) => ({
    start,
    length,
    data,
    zero,
    present,
  }));

/** nbdinfo --map lines as [offset, length, type]. */
const nbdinfoMap = async (args: string[]): Promise<number[][]> =>
  (await ok('nbdinfo', ['--map', ...args]))
    .trim()
    .split('\n')
    .map((line) => line.trim().split(/\s+/).slice(0, 3).map(Number));

test('nbdinfo --json: our exports look like qemu-storage-daemon’s (flags, sizes, contexts, description)', async (t) => {
  if (!requirePeer(t, 'nbdinfo') || !requirePeer(t, 'qemu-storage-daemon') || !requirePeer(t, 'qemu-img')) return;
  const f = await serverFixture(t);
  await rawImage(f.path('ours.raw'), '16M', 'write -P 0x5a 0 1M');
  await rawImage(f.path('qemu.raw'), '16M', 'write -P 0x5a 0 1M');
  await exportImage(f, f.path('ours.raw'), 'rw', { writable: true });
  await f.execute('block-export-add', { type: 'nbd', id: 'ro', 'node-name': 'rw', name: 'ro', description: 'read-only view', 'allocation-depth': true });
  const qsdSocket = f.path('qsd.sock');
  const pidfile = f.path('qsd.pid');
  await ok('qemu-storage-daemon', [
    '--blockdev', `driver=file,node-name=f0,filename=${f.path('qemu.raw')}`,
    '--blockdev', 'driver=raw,node-name=rw,file=f0',
    '--nbd-server', `addr.type=unix,addr.path=${qsdSocket}`,
    '--export', 'type=nbd,id=rw,node-name=rw,writable=on',
    '--export', 'type=nbd,id=ro,node-name=rw,name=ro,description=read-only view,allocation-depth=on',
    '--pidfile', pidfile, '--daemonize',
  ]);
  t.teardown(async () => process.kill(Number(await readFile(pidfile, 'utf8')), 'SIGTERM'));
  for (const name of ['rw', 'ro']) {
    const describe = async (socket: string) => {
      const info = JSON.parse(await ok('nbdinfo', ['--json', `nbd+unix:///${name}?socket=${socket}`])) as { exports: Record<string, unknown>[] };
      const { uri: _uri, ...rest } = info.exports[0]!;
      return { ...info, exports: [rest] };
    };
    t.deepEqual(await describe(f.socket), await describe(qsdSocket), name);
  }
});

test('nbdinfo --map and qemu-img map over NBD agree with qemu-img map of the exported image', async (t) => {
  if (!requirePeer(t, 'nbdinfo') || !requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const f = await serverFixture(t);
  const image = f.path('m.raw');
  await rawImage(image, '64M', 'write -P 1 1M 64k', 'write -P 2 8M 3M', 'write -P 3 63M 1M');
  await exportImage(f, image, 'm');
  const expected = await mapOf(['-f', 'raw', '-U', image]);
  t.true(expected.length >= 5, 'the image has data and holes');
  t.deepEqual(await mapOf(['-f', 'raw', f.uri('m')]), expected);
  const types = expected.map((e) => [e.start, e.length, (e.data ? 0 : 1) | (e.zero ? 2 : 0)]);
  t.deepEqual(await nbdinfoMap([f.uri('m')]), types);
});

test('qemu:allocation-depth of a qcow2 overlay matches qemu-nbd -A on the same image', async (t) => {
  if (!requirePeer(t, 'nbdinfo') || !requirePeer(t, 'qemu-nbd') || !requirePeer(t, 'qemu-img')) return;
  const f = await serverFixture(t);
  const base = f.path('base.qcow2');
  const top = f.path('top.qcow2');
  await ok('qemu-img', ['create', '-f', 'qcow2', base, '16M']);
  await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 1M', base]);
  await ok('qemu-img', ['create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top]);
  await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 2 4M 64k', '-c', 'write -z 8M 1M', top]);
  await exportImage(f, top, 'top', { 'allocation-depth': true }, 'qcow2');
  const qemuSocket = f.path('q.sock');
  const pidfile = f.path('q.pid');
  // force-share: our export holds the image too (image locks).
  const shared = `driver=qcow2,file.filename=${top},force-share=on`;
  await ok('qemu-nbd', ['-r', '-A', '-x', 'top', `--socket=${qemuSocket}`, '--persistent', '--fork', `--pid-file=${pidfile}`, '--image-opts', shared]);
  t.teardown(async () => process.kill(Number(await readFile(pidfile, 'utf8')), 'SIGTERM'));
  const qemuUri = `nbd+unix:///top?socket=${qemuSocket}`;
  t.deepEqual(await nbdinfoMap(['--map=qemu:allocation-depth', f.uri('top')]), await nbdinfoMap(['--map=qemu:allocation-depth', qemuUri]));
  t.deepEqual(await nbdinfoMap([f.uri('top')]), await nbdinfoMap([qemuUri]));
});

test('qemu-io writes (plain, FUA, zeroes, discard) and pattern reads through our export reach the image', async (t) => {
  if (!requirePeer(t, 'qemu-io')) return;
  const f = await serverFixture(t);
  const image = f.path('w.raw');
  await rawImage(image, '16M');
  await exportImage(f, image, 'w', { writable: true });
  const commands = [
    'write -P 0xab 0 64k',
    'write -f -P 0x22 1M 4k',
    'aio_write -P 0x33 2M 512k',
    'aio_flush',
    'write -P 0x44 3M 1M',
    'write -z 3M 64k',
    'write -z -u 3200k 64k',
    'write -P 0x55 5M 4k',
    'discard 5M 4k',
    'flush',
    'read -P 0xab 0 64k',
    'read -P 0x22 1M 4k',
    'read -P 0x33 2M 512k',
    'read -P 0 3M 64k',
    'read -P 0x44 3136k 64k',
  ];
  const out = await run('qemu-io', ['-f', 'raw', ...commands.flatMap((c) => ['-c', c]), f.uri('w')]);
  t.is(out.code, 0, out.stderr);
  t.notRegex(out.stdout, /Pattern verification failed|error|failed/i);
  const check = await run('qemu-io', ['-r', '-U', '-f', 'raw', '-c', 'read -P 0xab 0 64k', '-c', 'read -P 0x33 2M 512k', '-c', 'read -P 0 3M 64k', image]);
  t.notRegex(check.stdout, /Pattern verification failed/);
});

test('qemu-img compare and nbdcopy in both directions, with several clients at once', async (t) => {
  if (!requirePeer(t, 'nbdcopy') || !requirePeer(t, 'qemu-img') || !requirePeer(t, 'qemu-io')) return;
  const f = await serverFixture(t);
  const image = f.path('c.raw');
  const source = f.path('source.raw');
  await rawImage(image, '32M', 'write -P 7 0 4M', 'write -P 9 20M 1M');
  await rawImage(source, '32M', 'write -P 0x61 1M 2M', 'write -P 0x62 16M 8M', 'write -P 0x63 31M 1M');
  await exportImage(f, image, 'c', { writable: true });
  // Out of the export: nbdcopy (multi-conn: several connections) and qemu-img compare.
  await ok('nbdcopy', [f.uri('c'), f.path('out.raw')]);
  t.true((await readFile(f.path('out.raw'))).equals(await readFile(image)));
  t.is((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', '-U', image, f.uri('c')])).code, 0);
  // Into the export: holes in the source become zeroes in the export.
  await ok('nbdcopy', ['--flush', source, f.uri('c')]);
  const same = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', f.uri('c'), source]);
  t.is(same.code, 0, same.stdout + same.stderr);
  t.true((await readFile(image)).equals(await readFile(source)));
  const differ = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', f.uri('c'), image.replace('c.raw', 'out.raw')]);
  t.is(differ.code, 1, 'a differing image is found to differ');
  // Several clients at once: writers on disjoint ranges and a reader, all in parallel.
  const writers = [0, 1, 2, 3].map((i) => run('qemu-io', ['-f', 'raw', '-c', `write -P ${0x70 + i} ${i * 4}M 4M`, '-c', `read -P ${0x70 + i} ${i * 4}M 4M`, f.uri('c')]));
  const reader = run('nbdcopy', [f.uri('c'), f.path('during.raw')]);
  for (const result of await Promise.all(writers)) {
    t.is(result.code, 0, result.stderr);
    t.notRegex(result.stdout, /Pattern verification failed/);
  }
  t.is((await reader).code, 0);
  const final = await readFile(image);
  for (let i = 0; i < 4; i++) t.true(final.subarray(i * 4 * MiB, (i + 1) * 4 * MiB).every((b) => b === 0x70 + i), `writer ${i}`);
  t.true(final.subarray(16 * MiB, 24 * MiB).every((b) => b === 0x62));
  t.is(f.server.clientCount, 0, 'every client has gone');
});
