/** The QMP server's transports and its limits against misbehaving clients. */
import net from 'node:net';
import { join } from 'node:path';
import test from 'ava';
import { QmpClient } from '../../../core/qmp/qmp-client.js';
import { QmpServer } from '../../../core/qmp/qmp-server.js';
import { QMP_VERSION } from '../../../core/version.js';
import { connectQmp, createTestLayer } from '../../../core/testing/index.js';
import { tempDir } from '../../helpers/temp-dir.js';

test('QMP over TCP, several clients at once, each with its own negotiation', async (t) => {
  const layer = await createTestLayer({ plugins: ['qmp-block-commands'] });
  const { server, address } = await layer.serveQmp({ type: 'inet', host: '127.0.0.1', port: 0 });
  t.is(address.type, 'inet');
  const clients = await Promise.all([1, 2, 3].map(() => QmpClient.connect(address)));
  t.deepEqual(await clients[0]!.execute('query-version'), {
    error: { class: 'CommandNotFound', desc: "Expecting capabilities negotiation with 'qmp_capabilities'" },
  });
  await clients[1]!.execute('qmp_capabilities');
  const replies = await Promise.all(
    clients.slice(1).map((c, i) =>
      c.execute('blockdev-add', { driver: 'memory', 'node-name': `m${i}`, size: 4096 }, `add-${i}`),
    ),
  );
  t.deepEqual(replies[0], { return: {}, id: 'add-0' });
  t.deepEqual(replies[1], {
    id: 'add-1',
    error: { class: 'CommandNotFound', desc: "Expecting capabilities negotiation with 'qmp_capabilities'" },
  });
  await Promise.all(clients.map((c) => c.close()));
  await server.close();
  await layer.close();
});

test('a client that sends garbage forever keeps getting errors, and the server keeps serving others', async (t) => {
  const layer = await createTestLayer();
  const { client, socketPath, close } = await connectQmp(layer);
  const hostile = net.connect(socketPath);
  await new Promise((resolve) => hostile.once('data', resolve));
  let errors = 0;
  hostile.on('data', (chunk: Buffer) => (errors += chunk.toString().split('JSON parse error').length - 1));
  hostile.on('error', () => undefined);
  const replied = new Promise((resolve) => hostile.on('data', resolve));
  for (let i = 0; i < 200; i++) hostile.write(Buffer.alloc(4096, 'x'));
  hostile.write('\n');
  t.deepEqual((await client.execute('query-version')).return !== undefined, true, 'the other client is served');
  await replied;
  t.true(errors >= 1);
  hostile.destroy();
  await close();
  await layer.close();
});

test('malformed input gets an error and the connection survives', async (t) => {
  const layer = await createTestLayer();
  const { client, close } = await connectQmp(layer);
  client.sendRaw('{"execute": ]');
  t.deepEqual(await client.nextReply(), { error: { class: 'GenericError', desc: 'JSON parse error, expecting value' } });
  t.true('return' in (await client.execute('query-version')));
  await close();
  await layer.close();
});

test('a client that never reads is disconnected once its unsent replies pass the bound', async (t) => {
  const layer = await createTestLayer({ plugins: ['qmp-block-commands'] });
  const server = new QmpServer(layer.commands, layer.hooks, QMP_VERSION, { maxOutputBacklog: 1 << 20 });
  const dir = await tempDir(t, 'blocklayer-qmp-');
  const socketPath = join(dir, 'qmp.sock');
  await server.listen({ type: 'unix', path: socketPath });
  const greedy = net.connect(socketPath);
  await new Promise((resolve) => greedy.once('data', resolve));
  greedy.pause();
  greedy.on('error', () => undefined);
  // Listening from the start: the server may hang up (and a write fail with EPIPE) before the pause ends.
  const closed = new Promise((resolve) => greedy.once('close', resolve));
  greedy.write('{"execute":"qmp_capabilities"}');
  for (let i = 0; i < 2000; i++) greedy.write('{"execute":"query-qmp-schema"}');
  await new Promise((resolve) => setTimeout(resolve, 1000));
  let replies = 0;
  greedy.on('data', (chunk: Buffer) => (replies += chunk.toString().split('\r\n').length - 1));
  greedy.resume();
  await closed;
  t.true(replies < 2001, `the server hung up after ${replies} replies`);
  await server.close();
  await layer.close();
});

test('closing the server does not wait for a client that keeps its side open', async (t) => {
  const layer = await createTestLayer();
  const server = new QmpServer(layer.commands, layer.hooks, QMP_VERSION, { closeGraceMs: 200 });
  const address = await server.listen({ type: 'inet', host: '127.0.0.1', port: 0 });
  const stubborn = net.connect((address as { port: number }).port, '127.0.0.1');
  stubborn.on('end', () => undefined);
  await new Promise((resolve) => stubborn.once('data', resolve));
  const start = Date.now();
  await server.close();
  t.true(Date.now() - start < 5000);
  stubborn.destroy();
  await layer.close();
});
