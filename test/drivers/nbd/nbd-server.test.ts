/** The nbd driver against nbd-server, the protocol's reference implementation (simple replies only, no meta contexts). */
import { readFile } from 'node:fs/promises';
import test from 'ava';
import type { BlockIoError } from '../../../core/errors.js';
import { requirePeer } from '../../helpers/peers.js';
import { filled, KiB, MiB, nbdFixture, readNode, sameBytes, sparseFile } from './fixture.js';

test('reads and writes reach the exported file; block status is all data without meta contexts', async (t) => {
  if (!requirePeer(t, 'nbd-server')) return;
  const f = await nbdFixture(t);
  await sparseFile(f.path('disk.img'), 4 * MiB, [[0, 64 * KiB, 0x5a]]);
  const node = await f.add(await f.nbdServer(f.path('disk.img')));
  t.is(node.length, 4 * MiB);
  sameBytes(t, await readNode(node, 0, 64 * KiB), filled(64 * KiB, 0x5a));
  sameBytes(t, await readNode(node, 3 * MiB, 4 * KiB), filled(4 * KiB, 0));
  await node.write(MiB + 5, filled(70000, 0xc3));
  await Promise.all(Array.from({ length: 16 }, (_, i) => node.write(2 * MiB + i * 32 * KiB, filled(32 * KiB, i + 1))));
  await node.writeZeroes(0, 4 * KiB);
  await node.flush();
  const file = await readFile(f.path('disk.img'));
  sameBytes(t, file.subarray(MiB + 5, MiB + 70005), filled(70000, 0xc3));
  t.true(Array.from({ length: 16 }, (_, i) => i).every((i) => file.subarray(2 * MiB + i * 32 * KiB, 2 * MiB + (i + 1) * 32 * KiB).equals(filled(32 * KiB, i + 1))));
  sameBytes(t, file.subarray(0, 8 * KiB), Buffer.concat([filled(4 * KiB, 0), filled(4 * KiB, 0x5a)]));
  const status = await node.blockStatus(0, node.length);
  t.is(status.length, 1);
  t.like(status[0], { offset: 0, length: 4 * MiB, data: true, zero: false });
});

test('a read-only export: writes through a read-only node are refused, reads work', async (t) => {
  if (!requirePeer(t, 'nbd-server')) return;
  const f = await nbdFixture(t);
  await sparseFile(f.path('ro.img'), MiB, [[4 * KiB, 4 * KiB, 0x11]]);
  const server = await f.nbdServer(f.path('ro.img'), ['readonly = true']);
  await t.throwsAsync(f.add(server), { message: 'NBD export is read-only' });
  const node = await f.add(server, { 'read-only': true });
  sameBytes(t, await readNode(node, 4 * KiB, 4 * KiB), filled(4 * KiB, 0x11));
  const error = await t.throwsAsync<BlockIoError>(node.write(0, filled(512, 1)));
  t.is(error?.message, "Block node 'n' is read-only");
});
