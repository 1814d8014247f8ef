/** A server that goes away: clear errors, reconnect-delay, open-timeout. */
import { writeFile } from 'node:fs/promises';
import test from 'ava';
import type { BlockNode } from '../../../core/block/block-node.js';
import type { BlockIoError } from '../../../core/errors.js';
import { requirePeer } from '../../helpers/peers.js';
import { filled, KiB, MiB, nbdFixture, readNode, sameBytes } from './fixture.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Reads until the node answers again (the background reconnect got through), for at most 5 s. */
async function readOnceBack(node: BlockNode, offset: number, length: number): Promise<Buffer> {
  for (let i = 0; ; i++) {
    try {
      return await readNode(node, offset, length);
    } catch (error) {
      if (i >= 100) throw error;
      await sleep(50);
    }
  }
}

test('reconnect-delay 0: requests fail at once with EIO naming the server; later ones work once it is back', async (t) => {
  if (!requirePeer(t, 'qemu-nbd')) return;
  const f = await nbdFixture(t);
  await writeFile(f.path('d.raw'), filled(MiB, 0x31));
  const first = await f.qemuNbd(f.path('d.raw'));
  const node = await f.add(first);
  await node.write(0, filled(4096, 0x32));
  await first.stop();
  const error = await t.throwsAsync<BlockIoError>(readNode(node, 0, 4096));
  t.is(error?.errno, 'EIO');
  t.regex(error?.message ?? '', new RegExp(`^Lost the connection to NBD server '${first.socket}': `));
  await f.qemuNbd(f.path('d.raw'));
  sameBytes(t, await readOnceBack(node, 0, 8192), Buffer.concat([filled(4096, 0x32), filled(4096, 0x31)]));
});

test('reconnect-delay: a request in flight when the server dies is sent again on the new connection', async (t) => {
  if (!requirePeer(t, 'nbdkit')) return;
  const f = await nbdFixture(t);
  await writeFile(f.path('d.img'), filled(MiB, 0x44));
  const slow = await f.nbdkit(['--filter=delay', 'file', `file=${f.path('d.img')}`, 'delay-read=2000ms']);
  const node = await f.add(slow, { export: '', 'reconnect-delay': 10 });
  const read = readNode(node, 64 * KiB, 4096);
  await sleep(100);
  await slow.stop('SIGKILL');
  await sleep(200);
  await f.nbdkit(['file', `file=${f.path('d.img')}`]);
  sameBytes(t, await read, filled(4096, 0x44));
  sameBytes(t, await readNode(node, 0, 4096), filled(4096, 0x44), 'new requests use the new connection');
});

test('reconnect-delay passes without a server: the waiting request fails with EIO, saying so', async (t) => {
  if (!requirePeer(t, 'nbdkit')) return;
  const f = await nbdFixture(t);
  const server = await f.nbdkit(['memory', '1M']);
  const node = await f.add(server, { export: '', 'reconnect-delay': 1 });
  await server.stop('SIGKILL');
  const started = Date.now();
  const error = await t.throwsAsync<BlockIoError>(readNode(node, 0, 512));
  t.true(Date.now() - started >= 900, 'the request waited for the reconnect delay');
  t.is(error?.errno, 'EIO');
  t.regex(error?.message ?? '', /^Lost the connection to NBD server '.*': .*; not reconnected within reconnect-delay \(1 s\)$/);
});

test('open-timeout: the open keeps trying until the server is up', async (t) => {
  if (!requirePeer(t, 'nbdkit')) return;
  const f = await nbdFixture(t);
  const opening = f.graph.add({ driver: 'nbd', 'node-name': 'n', server: { type: 'unix', path: f.path('late.sock') }, 'open-timeout': 10 });
  await sleep(300);
  await f.nbdkit(['memory', '1M'], 'late');
  const node = await opening;
  t.is(node.length, MiB);
  await t.throwsAsync(f.graph.add({ driver: 'nbd', 'node-name': 'm', server: { type: 'unix', path: f.path('none.sock') } }), {
    message: /^Failed to connect to '.*none\.sock': No such file or directory$/,
  });
});
