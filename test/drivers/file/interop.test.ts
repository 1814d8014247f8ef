/** Data written by qemu-io is read by the driver and the other way round. */
import test from 'ava';
import { fileDriver } from '../../../drivers/file/driver.js';
import { requirePeer } from '../../helpers/peers.js';
import { fileFixture, filled, KiB, MiB, readNode, run, sameBytes, sparseFile } from './fixture.js';

test('reads a pattern qemu-io wrote', async (t) => {
  if (!requirePeer(t, 'qemu-io')) return;
  const f = await fileFixture(t, fileDriver);
  await sparseFile(f.path('a.img'), MiB);
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 0 64k', '-c', 'write -P 0x12 100k 3k', f.path('a.img')]);
  const node = await f.add(f.path('a.img'), { 'read-only': true });
  sameBytes(t, await readNode(node, 0, 64 * KiB), filled(64 * KiB, 0xab));
  sameBytes(t, await readNode(node, 64 * KiB, 36 * KiB), filled(36 * KiB, 0));
  sameBytes(t, await readNode(node, 100 * KiB, 3 * KiB), filled(3 * KiB, 0x12));
});

test('qemu-io reads back what the driver wrote', async (t) => {
  if (!requirePeer(t, 'qemu-io')) return;
  const f = await fileFixture(t, fileDriver);
  await sparseFile(f.path('b.img'), MiB, [[0, MiB, 0x77]]);
  const node = await f.add(f.path('b.img'), { discard: 'unmap' });
  await node.write(0, filled(64 * KiB, 0xcd));
  await node.writeZeroes(64 * KiB, 64 * KiB, { mayUnmap: true });
  await node.flush();
  // qemu-io exits 1 when a pattern does not verify.
  const out = await run('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0xcd 0 64k', '-c', 'read -P 0 64k 64k', '-c', 'read -P 0x77 128k 896k', f.path('b.img')]);
  t.notRegex(out, /Pattern verification failed/);
  t.regex(out, /read 65536\/65536 bytes at offset 0/);
});
