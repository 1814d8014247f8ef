/**
 * Unix socket paths that read as numbers: Node's net module would take them
 * for TCP ports (`--qmp 12345` listened on port 12345 of every interface).
 * The QMP server and client and the NBD server must make and reach the
 * socket file instead, as QEMU does.
 */
import { once } from 'node:events';
import { stat } from 'node:fs/promises';
import net from 'node:net';
import test from 'ava';
import { QmpClient } from '../../../core/qmp/qmp-client.js';
import { createTestLayer } from '../../../core/testing/index.js';
import { unixSocketPath } from '../../../core/util/unix-socket-path.js';
import { tempDir } from '../../helpers/temp-dir.js';

test('paths that read as non-negative numbers get ./ in front; others are kept', (t) => {
  for (const path of ['12345', '1.5', '0x10', '1e3', '99999999999999999999']) t.is(unixSocketPath(path), `./${path}`, path);
  for (const path of ['/run/12345', 'qmp.sock', 'dir/12345', '-1', '\u000012345', './12345']) t.is(unixSocketPath(path), path, JSON.stringify(path));
});

// Serial: the working directory is the process's (each test file runs in its own process).
test.serial('QMP and NBD servers on the relative paths 12345 and 1.5 make those socket files, and clients reach them', async (t) => {
  const dir = await tempDir(t, 'blocklayer-socket-');
  const cwd = process.cwd();
  process.chdir(dir);
  t.teardown(() => process.chdir(cwd));
  const layer = await createTestLayer({ plugins: ['nbd-server', 'qmp-block-commands'] });
  t.teardown(() => layer.close());
  const qmp = layer.createQmpServer();
  await qmp.listen({ type: 'unix', path: '12345' });
  t.true((await stat('12345')).isSocket(), 'the QMP socket file');
  const client = await QmpClient.connect('12345', { negotiate: true });
  t.like(await client.execute('query-version'), { return: { qemu: { major: 7 } } });
  await client.close();
  await qmp.close();
  await layer.execute('nbd-server-start', { addr: { type: 'unix', data: { path: '1.5' } } });
  t.true((await stat('1.5')).isSocket(), 'the NBD socket file');
  const socket = net.connect(unixSocketPath('1.5'));
  await once(socket, 'connect');
  socket.destroy();
  await layer.execute('nbd-server-stop', {});
});
