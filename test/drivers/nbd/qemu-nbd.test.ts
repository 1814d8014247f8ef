/** The nbd driver against qemu-nbd serving raw images (and a qcow2 image with a dirty bitmap). */
import { readFile } from 'node:fs/promises';
import test from 'ava';
import type { BlockIoError } from '../../../core/errors.js';
import { nbdDriver, type NbdState } from '../../../drivers/nbd/driver.js';
import { requirePeer } from '../../helpers/peers.js';
import { filled, KiB, MiB, nbdFixture, readNode, run, sameBytes, sparseFile } from './fixture.js';

/** A raw image made as qemu-img makes it (its first 4 KiB allocated), with qemu-io patterns. */
async function image(path: string, size: string, ...commands: string[]): Promise<void> {
  await run('qemu-img', ['create', '-f', 'raw', path, size]);
  if (commands.length > 0) await run('qemu-io', ['-f', 'raw', ...commands.flatMap((c) => ['-c', c]), path]);
}

test('reads, writes and flushes reach the image; limits, size and filename are the server’s', async (t) => {
  if (!requirePeer(t, 'qemu-nbd')) return;
  const f = await nbdFixture(t);
  await image(f.path('a.raw'), '8M', 'write -P 0xab 0 64k', 'write -P 0x12 1M 3k');
  const server = await f.qemuNbd(f.path('a.raw'));
  const node = await f.add(server);
  t.is(node.length, 8 * MiB);
  t.like(node.limits, { requestAlignment: 1, maxTransfer: 32 * MiB });
  t.deepEqual(await nbdDriver.describe!(node.driverState as NbdState), { filename: `nbd+unix:///exp?socket=${server.socket}` });
  sameBytes(t, await readNode(node, 0, 64 * KiB), filled(64 * KiB, 0xab));
  sameBytes(t, await readNode(node, MiB - 100, 3 * KiB + 200), Buffer.concat([filled(100, 0), filled(3 * KiB, 0x12), filled(100, 0)]));
  await node.write(2 * MiB + 7, filled(70000, 0xcd), { fua: true });
  await node.write(5 * MiB, filled(4096, 0xee));
  await node.flush();
  const file = await readFile(f.path('a.raw'));
  sameBytes(t, file.subarray(2 * MiB + 7, 2 * MiB + 7 + 70000), filled(70000, 0xcd));
  sameBytes(t, file.subarray(5 * MiB, 5 * MiB + 4096), filled(4096, 0xee));
  const out = await run('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0xcd 2097159 70000', `nbd+unix:///exp?socket=${server.socket}`]);
  t.notRegex(out, /Pattern verification failed/);
});

test('many requests in flight at once, matched to their replies', async (t) => {
  if (!requirePeer(t, 'qemu-nbd')) return;
  const f = await nbdFixture(t);
  await image(f.path('p.raw'), '16M');
  const node = await f.add(await f.qemuNbd(f.path('p.raw')));
  const chunks = Array.from({ length: 128 }, (_, i) => i);
  await Promise.all(chunks.map((i) => node.write(i * 128 * KiB, filled(128 * KiB, i + 1))));
  const back = await Promise.all(chunks.map((i) => readNode(node, i * 128 * KiB, 128 * KiB)));
  t.true(chunks.every((i) => back[i]!.equals(filled(128 * KiB, i + 1))));
  const file = await readFile(f.path('p.raw'));
  t.true(chunks.every((i) => file.subarray(i * 128 * KiB, (i + 1) * 128 * KiB).equals(filled(128 * KiB, i + 1))));
});

test('block status matches qemu-img map of the exported image; write-zeroes and discard show in it', async (t) => {
  if (!requirePeer(t, 'qemu-nbd') || !requirePeer(t, 'qemu-img')) return;
  const f = await nbdFixture(t);
  await image(f.path('m.raw'), '4M', 'write -P 1 1M 64k', 'write -P 2 2M 1M');
  const node = await f.add(await f.qemuNbd(f.path('m.raw')), { discard: 'unmap' });
  const map = async () =>
    (JSON.parse(await run('qemu-img', ['map', '-U', '-f', 'raw', '--output=json', f.path('m.raw')])) as Record<string, unknown>[]).map(
      ({ start, length, data, zero, offset }) => ({ offset: start, length, data, zero, hostOffset: offset }),
    );
  const ours = async () => (await node.blockStatus(0, node.length)).map(({ offset, length, data, zero, hostOffset }) => ({ offset, length, data, zero, hostOffset }));
  t.deepEqual(await ours(), await map());
  await node.writeZeroes(2 * MiB, 256 * KiB, { mayUnmap: true });
  await node.discard(2 * MiB + 512 * KiB, 256 * KiB);
  await node.writeZeroes(1 * MiB, 64 * KiB);
  t.deepEqual(await ours(), await map());
  sameBytes(t, await readNode(node, 2 * MiB, 256 * KiB), filled(256 * KiB, 0));
  sameBytes(t, await readNode(node, MiB, 64 * KiB), filled(64 * KiB, 0));
  t.like((await node.blockStatus(2 * MiB, 256 * KiB))[0], { data: false, zero: true }, 'zeroes with unmap punched a hole');
});

test('a read-only export: a read-write node is refused, read-only and auto-read-only nodes work, writes are refused', async (t) => {
  if (!requirePeer(t, 'qemu-nbd')) return;
  const f = await nbdFixture(t);
  await image(f.path('r.raw'), '1M', 'write -P 0x5a 0 4k');
  const server = await f.qemuNbd(f.path('r.raw'), ['-r']);
  await t.throwsAsync(f.add(server), { message: 'NBD export is read-only' });
  const node = await f.add(server, { 'auto-read-only': true });
  t.true(node.readOnly);
  sameBytes(t, await readNode(node, 0, 4096), filled(4096, 0x5a));
  const error = await t.throwsAsync<BlockIoError>(node.write(0, filled(512, 1)));
  t.is(error?.message, "Block node 'n' is read-only");
  await f.graph.del('n');
  t.true((await f.add(server, { 'read-only': true })).readOnly);
});

test('an export the server does not have: its error text is passed on', async (t) => {
  if (!requirePeer(t, 'qemu-nbd')) return;
  const f = await nbdFixture(t);
  await image(f.path('e.raw'), '1M');
  const server = await f.qemuNbd(f.path('e.raw'));
  await t.throwsAsync(f.add(server, { export: 'nope' }), {
    message: "Requested export not available; server reported: export 'nope' not present",
  });
  await t.throwsAsync(f.add({ ...server, server: { type: 'unix', path: f.path('none.sock') } }), {
    message: `Failed to connect to '${f.path('none.sock')}': No such file or directory`,
  });
});

test('x-dirty-bitmap reads qemu:dirty-bitmap:NAME as block status, dirty as "not data" (QEMU’s inversion)', async (t) => {
  if (!requirePeer(t, 'qemu-nbd') || !requirePeer(t, 'qemu-img')) return;
  const f = await nbdFixture(t);
  const top = f.path('top.qcow2');
  await run('qemu-img', ['create', '-f', 'qcow2', top, '16M']);
  await run('qemu-img', ['bitmap', '--add', top, 'b0']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 2 4M 64k', top]);
  const server = await f.qemuNbd(top, ['-f', 'qcow2', '-B', 'b0']);
  const node = await f.add(server, { 'x-dirty-bitmap': 'qemu:dirty-bitmap:b0', 'read-only': true });
  const map = (await node.blockStatus(0, node.length)).map(({ offset, length, data }) => ({ offset, length, data }));
  t.deepEqual(map, [
    { offset: 0, length: 4 * MiB, data: true },
    { offset: 4 * MiB, length: 64 * KiB, data: false },
    { offset: 4 * MiB + 64 * KiB, length: 12 * MiB - 64 * KiB, data: true },
  ]);
});

test('a sparse raw file: holes come back as OFFSET_HOLE chunks and read as zeroes', async (t) => {
  if (!requirePeer(t, 'qemu-nbd')) return;
  const f = await nbdFixture(t);
  await sparseFile(f.path('s.raw'), 4 * MiB, [[64 * KiB, 64 * KiB, 0x21], [3 * MiB, 128 * KiB, 0x43]]);
  const node = await f.add(await f.qemuNbd(f.path('s.raw')));
  const all = await readNode(node, 0, 4 * MiB);
  sameBytes(t, all, await readFile(f.path('s.raw')));
});
