/**
 * file+raw through the public API and QMP against qemu-io, the oracle: what
 * qemu-io wrote reads back through blockdev-add'ed nodes, and what we wrote
 * verifies in qemu-io.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test, { type ExecutionContext } from 'ava';
import { BlockLayer } from '../../core/block-layer.js';
import { requirePeer } from '../helpers/peers.js';
import { tempDir } from '../helpers/temp-dir.js';

const run = promisify(execFile);

async function image(t: ExecutionContext, size: string): Promise<string> {
  const dir = await tempDir(t, 'blocklayer-interop-');
  const path = join(dir, 'disk.raw');
  await run('qemu-img', ['create', '-f', 'raw', path, size]);
  return path;
}

test('a pattern written by qemu-io reads back through blockdev-add file+raw', async (t) => {
  if (!requirePeer(t, 'qemu-io') || !requirePeer(t, 'qemu-img')) return;
  const path = await image(t, '16M');
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 0 64k', '-c', 'write -P 0x5a 8M 4k', path]);
  const layer = await BlockLayer.create();
  await layer.execute('blockdev-add', { driver: 'raw', 'node-name': 'disk0', file: { driver: 'file', filename: path } });
  const disk = layer.graph.node('disk0')!;
  const head = Buffer.alloc(65536 + 512);
  await disk.read(0, head);
  t.true(head.subarray(0, 65536).every((b) => b === 0xab));
  t.true(head.subarray(65536).every((b) => b === 0));
  const middle = Buffer.alloc(4096);
  await disk.read(8 << 20, middle);
  t.true(middle.every((b) => b === 0x5a));
  await layer.close();
});

test('data written through the API is read back by qemu-io -r', async (t) => {
  if (!requirePeer(t, 'qemu-io') || !requirePeer(t, 'qemu-img')) return;
  const path = await image(t, '16M');
  const layer = await BlockLayer.create();
  await layer.execute('blockdev-add', { driver: 'file', 'node-name': 'proto', filename: path });
  await layer.execute('blockdev-add', { driver: 'raw', 'node-name': 'disk0', file: 'proto' });
  const device = layer.graph.attachBackend('virtio0', 'disk0');
  await device.write(0, Buffer.alloc(65536, 0xcd));
  await device.write(1 << 20, Buffer.alloc(1000, 0x11));
  await device.flush();
  await layer.close();
  const { stdout } = await run('qemu-io', [
    '-f', 'raw', '-r',
    '-c', 'read -P 0xcd 0 64k',
    '-c', 'read -P 0 64k 960k',
    '-c', 'read -P 0x11 1M 1000',
    path,
  ]);
  t.notRegex(stdout, /Pattern verification failed/);
  t.is(stdout.match(/^read /gm)?.length, 3);
});
