/**
 * The nbd driver against nbdkit: its memory and file plugins, old or
 * limited servers (--no-sr, --mask-handshake, -o, feature-masking
 * filters), the log filter as a wire tap, and the error and delay filters.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import test from 'ava';
import type { BlockIoError } from '../../../core/errors.js';
import type { NbdState } from '../../../drivers/nbd/driver.js';
import { requirePeer } from '../../helpers/peers.js';
import { filled, KiB, MiB, nbdFixture, readNode, sameBytes } from './fixture.js';

/** The requests the log filter recorded: `Write offset=0x0 count=0x1000 fua=1`. */
async function logged(path: string): Promise<string[]> {
  const text = await readFile(path, 'utf8');
  return [...text.matchAll(/connection=\d+ (Read|Write|Zero|Trim|Flush|Extents) id=\d+ ?([^.\n]*)/g)].map((m) => `${m[1]} ${m[2]}`.trim());
}

test('memory plugin: data, zeroes, trim, flush, and the exact flags on the wire', async (t) => {
  if (!requirePeer(t, 'nbdkit')) return;
  const f = await nbdFixture(t);
  const log = f.path('log');
  const node = await f.add(await f.nbdkit(['--filter=log', 'memory', '1M', `logfile=${log}`]), { discard: 'unmap' });
  await node.write(0, filled(64 * KiB, 0x61), { fua: true });
  await node.writeZeroes(0, 4 * KiB);
  await node.writeZeroes(4 * KiB, 4 * KiB, { mayUnmap: true });
  await node.writeZeroes(8 * KiB, 4 * KiB, { noFallback: true });
  await node.discard(16 * KiB, 4 * KiB);
  await node.flush();
  sameBytes(t, await readNode(node, 0, 16 * KiB), Buffer.concat([filled(12 * KiB, 0), filled(4 * KiB, 0x61)]));
  t.deepEqual((await logged(log)).slice(0, 6), [
    'Write offset=0x0 count=0x10000 fua=1',
    'Zero offset=0x0 count=0x1000 trim=0 fua=0 fast=0',
    'Zero offset=0x1000 count=0x1000 trim=1 fua=0 fast=0',
    'Zero offset=0x2000 count=0x1000 trim=0 fua=0 fast=1',
    'Trim offset=0x4000 count=0x1000 fua=0',
    'Flush',
  ]);
  const status = await node.blockStatus(0, MiB);
  t.like(status[0], { offset: 0, data: true });
  t.like(status.at(-1), { data: false, zero: true });
});

test('file plugin: writes land in the file', async (t) => {
  if (!requirePeer(t, 'nbdkit')) return;
  const f = await nbdFixture(t);
  await writeFile(f.path('disk.img'), filled(2 * MiB, 0x0f));
  const node = await f.add(await f.nbdkit(['file', `file=${f.path('disk.img')}`]));
  t.is(node.length, 2 * MiB);
  await node.write(MiB + 3, filled(5000, 0xf0));
  await node.flush();
  const file = await readFile(f.path('disk.img'));
  sameBytes(t, file.subarray(MiB + 3, MiB + 5003), filled(5000, 0xf0));
  sameBytes(t, await readNode(node, MiB, 3), filled(3, 0x0f));
});

test('old servers: no structured replies (block status is all data), plain newstyle, oldstyle', async (t) => {
  if (!requirePeer(t, 'nbdkit')) return;
  const f = await nbdFixture(t);
  const cases: [string, string[], Record<string, unknown>][] = [
    ['no-sr', ['--no-sr'], { style: 'fixed-newstyle', structured: false, contextId: undefined }],
    ['mask0', ['--mask-handshake=0'], { style: 'newstyle', structured: false }],
    ['old', ['-o'], { style: 'oldstyle', structured: false }],
  ];
  for (const [name, args, expected] of cases) {
    const node = await f.add(await f.nbdkit([...args, 'memory', '1M'], name), { export: '' });
    t.like((node.driverState as NbdState).client.info, expected, name);
    await node.write(512, filled(1024, 0x42));
    sameBytes(t, await readNode(node, 0, 2048), Buffer.concat([filled(512, 0), filled(1024, 0x42), filled(512, 0)]), name);
    t.deepEqual(await node.blockStatus(0, MiB), [{ offset: 0, length: MiB, data: true, zero: false, allocated: true, hostOffset: 0 }], name);
    await f.graph.del('n');
  }
});

test('features the server lacks are emulated: FUA as write + FLUSH, write-zeroes as writes; fast zero is refused', async (t) => {
  if (!requirePeer(t, 'nbdkit')) return;
  const f = await nbdFixture(t);
  const log = f.path('log');
  const args = ['--filter=log', '--filter=fua', '--filter=nozero', 'memory', '1M', 'zeromode=none', `logfile=${log}`];
  const node = await f.add(await f.nbdkit(args));
  await node.write(0, filled(4096, 1), { fua: true });
  await node.writeZeroes(4096, 8192, { fua: true });
  const error = await t.throwsAsync<BlockIoError>(node.writeZeroes(0, 4096, { noFallback: true }));
  t.is(error?.errno, 'ENOTSUP');
  t.deepEqual(await logged(log), ['Write offset=0x0 count=0x1000 fua=0', 'Flush', 'Write offset=0x1000 count=0x2000 fua=0', 'Flush']);
});

test('read-only nbdkit (-r): writes are refused at open unless the node is read-only', async (t) => {
  if (!requirePeer(t, 'nbdkit')) return;
  const f = await nbdFixture(t);
  const server = await f.nbdkit(['-r', 'memory', '1M']);
  await t.throwsAsync(f.add(server), { message: 'NBD export is read-only' });
  const node = await f.add(server, { 'read-only': true });
  sameBytes(t, await readNode(node, 0, 512), filled(512, 0));
});

test('errors injected by the error filter come back as their errno; the connection survives them', async (t) => {
  if (!requirePeer(t, 'nbdkit')) return;
  const f = await nbdFixture(t);
  const trigger = f.path('inject');
  const args = ['--filter=error', 'memory', '1M', 'error=ENOSPC', 'error-pwrite-rate=100%', 'error-pread=EIO', 'error-pread-rate=100%', `error-pread-file=${trigger}`];
  const node = await f.add(await f.nbdkit(args));
  const write = await t.throwsAsync<BlockIoError>(node.write(0, filled(4096, 1)));
  t.like(write, { name: 'BlockIoError', errno: 'ENOSPC', message: 'No space left on device' });
  sameBytes(t, await readNode(node, 0, 4096), filled(4096, 0), 'no trigger file: reads work');
  await writeFile(trigger, '');
  const read = await t.throwsAsync<BlockIoError>(readNode(node, 0, 4096));
  t.like(read, { errno: 'EIO', message: 'Input/output error' });
  await rm(trigger);
  sameBytes(t, await readNode(node, 4096, 4096), filled(4096, 0));
});

test('replies come back out of order: a write overtakes a slow read (delay filter)', async (t) => {
  if (!requirePeer(t, 'nbdkit')) return;
  const f = await nbdFixture(t);
  const node = await f.add(await f.nbdkit(['--filter=delay', 'memory', '1M', 'delay-read=400ms']));
  const order: string[] = [];
  const read = readNode(node, 0, 4096).then(() => order.push('read'));
  const write = node.write(64 * KiB, filled(4096, 9)).then(() => order.push('write'));
  await Promise.all([read, write]);
  t.deepEqual(order, ['write', 'read']);
});
