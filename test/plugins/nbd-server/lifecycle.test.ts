/**
 * The server's life around its clients: the layer closing takes the
 * listener, its socket file and every connection with it; a client that
 * goes away in the middle of a request leaves nothing behind; clients past
 * max-connections wait for a free slot; a client too slow to negotiate is
 * dropped; TCP works like Unix sockets.
 */
import { stat } from 'node:fs/promises';
import net from 'node:net';
import test from 'ava';
import { createTestLayer } from '../../../core/testing/index.js';
import { NBD_CMD_READ, NBD_CMD_WRITE } from '../../../core/protocols/nbd/constants.js';
import { encodeRequest } from '../../../core/protocols/nbd/transmission.js';
import { NbdServer } from '../../../plugins/nbd-server/nbd-server.js';
import { tempDir } from '../../helpers/temp-dir.js';
import { MiB, serverFixture } from './fixture.js';
import { RawNbdClient } from './raw-client.js';

async function memoryServer(t: Parameters<typeof serverFixture>[0]) {
  const f = await serverFixture(t, ['memory']);
  await f.execute('blockdev-add', { driver: 'memory', 'node-name': 'm', size: 64 * MiB });
  await f.execute('block-export-add', { type: 'nbd', id: 'm', 'node-name': 'm', writable: true });
  return f;
}

const until = async (condition: () => boolean, what: string): Promise<void> => {
  for (let i = 0; i < 500 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  if (!condition()) throw new Error(`timed out waiting until ${what}`);
};

test('closing the layer deletes the exports, disconnects every client and removes the socket', async (t) => {
  const dir = await tempDir(t, 'blocklayer-nbd-close-');
  const layer = await createTestLayer({ plugins: ['nbd-server', 'qmp-block-commands'] });
  const events: string[] = [];
  layer.hooks.event.tap('test', (e) => events.push(`${e.event} ${String(e.data?.id)}`));
  const socket = `${dir}/nbd.sock`;
  await layer.execute('blockdev-add', { driver: 'memory', 'node-name': 'm', size: MiB });
  await layer.execute('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } });
  await layer.execute('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'm' });
  const using = await RawNbdClient.connect(socket);
  await using.handshake('m');
  const negotiating = await RawNbdClient.connect(socket);
  await negotiating.greet();
  await layer.close();
  await Promise.all([using.closed, negotiating.closed]);
  t.deepEqual(events, ['BLOCK_EXPORT_DELETED e']);
  t.is(await stat(socket).catch(() => undefined), undefined, 'the socket file is gone');
});

test('a client that leaves in the middle of requests leaves nothing behind; the others are served', async (t) => {
  const f = await memoryServer(t);
  const unhandled: unknown[] = [];
  const onRejection = (reason: unknown) => unhandled.push(reason);
  process.on('unhandledRejection', onRejection);
  t.teardown(() => process.off('unhandledRejection', onRejection));
  for (let i = 0; i < 5; i++) {
    const leaver = await RawNbdClient.connect(f.socket);
    await leaver.handshake('m');
    // Big reads in flight, and a write whose payload never arrives in full.
    for (let j = 0; j < 8; j++) leaver.request({ type: NBD_CMD_READ, offset: j * 4 * MiB, length: 4 * MiB });
    leaver.send(encodeRequest({ type: NBD_CMD_WRITE, flags: 0, cookie: 99n, offset: 0, length: MiB }), Buffer.alloc(1000));
    leaver.destroy();
  }
  await until(() => f.server.clientCount === 0, 'the leavers are gone');
  const stayer = await RawNbdClient.connect(f.socket);
  await stayer.handshake('m');
  stayer.request({ type: NBD_CMD_READ, offset: 0, length: 4096 });
  t.is(RawNbdClient.errorOf(await stayer.reply()), 0);
  stayer.destroy();
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.deepEqual(unhandled, []);
  t.deepEqual(await f.execute('query-block-exports'), [{ id: 'm', type: 'nbd', 'node-name': 'm', 'shutting-down': false }]);
});

test('max-connections: a client past the limit waits, greeted once another leaves', async (t) => {
  const dir = await tempDir(t, 'blocklayer-nbd-max-');
  const layer = await createTestLayer({ plugins: ['nbd-server', 'qmp-block-commands'] });
  t.teardown(() => layer.close());
  const socket = `${dir}/nbd.sock`;
  await layer.execute('nbd-server-start', { addr: { type: 'unix', data: { path: socket } }, 'max-connections': 2 });
  const first = await RawNbdClient.connect(socket);
  const second = await RawNbdClient.connect(socket);
  await Promise.all([first.reader.read(18), second.reader.read(18)]);
  const third = await RawNbdClient.connect(socket);
  let greeted = false;
  const greeting = third.reader.read(18).then((g) => {
    greeted = true;
    return g;
  });
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.false(greeted, 'the third client waits');
  first.destroy();
  t.is((await greeting).subarray(0, 8).toString(), 'NBDMAGIC');
  second.destroy();
  third.destroy();
});

test('a client that does not finish negotiating in time is dropped', async (t) => {
  const f = await memoryServer(t);
  f.server.handshakeLimitMs = 200;
  const slow = await RawNbdClient.connect(f.socket);
  await slow.greet();
  const started = Date.now();
  await slow.closed;
  t.true(Date.now() - started < 5000);
  await until(() => f.server.clientCount === 0, 'the slow client is gone');
});

test('TCP: port 0 picks a free port; the export is served there', async (t) => {
  const layer = await createTestLayer({ plugins: ['nbd-server', 'qmp-block-commands'] });
  t.teardown(() => layer.close());
  await layer.execute('blockdev-add', { driver: 'memory', 'node-name': 'm', size: MiB });
  await layer.execute('nbd-server-start', { addr: { type: 'inet', data: { host: '127.0.0.1', port: '0' } } });
  await layer.execute('block-export-add', { type: 'nbd', id: 'm', 'node-name': 'm' });
  const address = layer.container.get(NbdServer).address;
  t.true(address?.type === 'inet' && (address.boundPort ?? 0) > 0);
  const socket = net.connect(address!.type === 'inet' ? address!.boundPort! : 0, '127.0.0.1');
  const greeting = await new Promise<Buffer>((resolve) => socket.once('data', resolve));
  t.is(greeting.subarray(0, 16).toString('latin1'), 'NBDMAGICIHAVEOPT');
  socket.destroy();
  const busy = await layer.execute('nbd-server-stop').then(() =>
    layer.execute('nbd-server-start', { addr: { type: 'inet', data: { host: '127.0.0.1', port: String(address!.type === 'inet' ? address!.boundPort : 0) } } }),
  );
  t.deepEqual(busy, {});
});
